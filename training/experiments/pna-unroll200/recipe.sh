#!/usr/bin/env bash
# Stage 5 probe: stage 4 (pna-unroll100/best, the bundled rule) fine-tuned with 200-step
# truncations on fresh 1,000-step episodes of task 17, w8, d1 and d2, for longer (200 outer
# steps = 40 episodes, against stage 4's 15). Outer step 0 validates stage 4 itself.
# --recompute: without it, a 200-step second-order segment on d2 needed more than this
# machine's 24 GiB (the first try was killed by the OOM killer at 23.8 GB).
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective tbptt \
  --unroll 200 --second-order --inner-steps 1000 --segment-steps 200 --outer-steps 200 --meta-batch-size 1 \
  --lr 1e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 --eval-every 50 --eval-steps 1000 --eval-seeds 2 \
  --save-every 5 --seed 7 --threads 1 --recompute --init training/experiments/pna-unroll100/best \
  --out training/experiments/pna-unroll200 "$@"
