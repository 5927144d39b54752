#!/usr/bin/env bash
# Experiment: ff-finetune-random with --second-order (back-propagation through the
# optimizee's gradients as well), to test whether the first-order truncated objective's
# bias is what made that fine-tuning degrade the rule. Run from the repository root.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule ff --objective tbptt --unroll 20 --second-order \
  --inner-steps 200 --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 2.5 \
  --outer-steps 200 --meta-batch-size 1 --lr 2e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 10 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 1 --threads 1 \
  --init training/ff-fmnist17/best \
  --out training/experiments/ff-finetune-random-2nd "$@"
