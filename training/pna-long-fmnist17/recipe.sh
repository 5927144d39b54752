#!/usr/bin/env bash
# Stage 2 of pna-fmnist17: long-horizon fine-tuning of stage 1 (training/pna-fmnist17), which,
# meta-trained on 150-300-step episodes, declines after ~2,000 steps (its eval-5000/). Here
# episodes last 1,000-5,000 steps (2,000 x U(0.5, 2.5)) and persist across outer steps: each
# outer step runs one 20-step segment (one second-order truncation) and meta-updates on it,
# so the rule sees every stage of a long run. Selection: one 3,000-step validation episode.
# Run from the repository root; `--resume` continues.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule pna --objective tbptt --unroll 20 --second-order \
  --inner-steps 2000 --random-inner-steps-after 0 --random-inner-steps-min 0.5 --random-inner-steps-max 2.5 \
  --segment-steps 20 --outer-steps 2000 --meta-batch-size 1 --lr 1e-4 --weight-decay 1e-4 --clip 1.0 \
  --warmup-steps 20 --eval-every 100 --eval-steps 3000 --save-every 10 --seed 3 --threads 1 \
  --init training/pna-fmnist17/best \
  --out training/pna-long-fmnist17 "$@"
