#!/usr/bin/env bash
# Probe of the short-horizon bias: stage 3 (the bundled rule) fine-tuned with 100-step
# truncations (5x stage 3's 20) on fresh 1,000-step episodes of task 17, w8, d1 and d2.
# Validation: 1,000 steps, the horizon the evaluation measures; outer step 0 is stage 3 itself.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective tbptt \
  --unroll 100 --second-order --inner-steps 1000 --segment-steps 100 --outer-steps 150 --meta-batch-size 1 \
  --lr 1e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 --eval-every 25 --eval-steps 1000 --eval-seeds 2 \
  --save-every 5 --seed 6 --threads 1 --init training/pna-multi-fmnist17/best \
  --out training/experiments/pna-unroll100 "$@"
