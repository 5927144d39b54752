#!/usr/bin/env bash
# Experiment (degraded: validation 82.3% at the start, 80.4/77.5/71.9% at outer steps 20/40/60;
# stopped at 62): fine-tunes the best rule of training/ff-fmnist17
# (tbptt, 200-step episodes, 175 outer steps) with random episode lengths of 150-500 steps,
# a lower meta learning rate and selection on two validation episodes of 1,000 steps.
# Run from the repository root; rerun with `--resume` to continue a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule ff --objective tbptt --unroll 20 \
  --inner-steps 200 --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 2.5 \
  --outer-steps 200 --meta-batch-size 1 --lr 2e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 20 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 1 --threads 1 \
  --init training/ff-fmnist17/best \
  --out training/experiments/ff-finetune-random "$@"
