#!/usr/bin/env bash
# Stage 3 of pna-fmnist17, the stage that is bundled: the long-horizon rule
# (training/pna-long-fmnist17) fine-tuned on task 17 and three smaller FashionMNIST CNNs
# (width 8, depth 1 and 2), on which stage 1 lost to or tied tuned Adam. Two persistent episodes (500-2,500 steps, each on a task drawn
# from its seed) advance 20 steps per outer step; selection averages one 2,000-step
# validation episode per task. Run from the repository root; `--resume` continues.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective tbptt \
  --unroll 20 --second-order --inner-steps 1000 --random-inner-steps-after 0 --random-inner-steps-min 0.5 \
  --random-inner-steps-max 2.5 --segment-steps 20 --outer-steps 600 --meta-batch-size 2 --lr 1e-4 \
  --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 --eval-every 100 --eval-steps 2000 --save-every 10 \
  --seed 4 --threads 1 --init training/pna-long-fmnist17/best \
  --out training/pna-multi-fmnist17 "$@"
