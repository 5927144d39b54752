#!/usr/bin/env bash
# Experiment (first-order tbptt; validation 78.4/80.5% at outer steps 20/40, below its ff start;
# stopped at 54): the paper's PNA rule (64 x 8, wave encoding) whose per-element
# head starts as the trained ff rule of training/ff-fmnist17 (graph inputs at
# zero, so step 0 is exactly that ff rule); truncated BPTT (unroll 20) over random episode
# lengths of 150-300 steps; selection on two 1,000-step validation episodes.
# A PNA rule trained from scratch learned far more slowly on 2 CPU cores
# (training/experiments/pna-scratch-tbptt-200: 65.8% validation after 50 outer steps).
# Run from the repository root; rerun with `--resume` to continue a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule pna --objective tbptt --unroll 20 \
  --inner-steps 200 --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 1.5 \
  --outer-steps 160 --meta-batch-size 1 --lr 3e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 20 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 2 --threads 1 \
  --init-head training/ff-fmnist17/best \
  --out training/experiments/pna-init-ff-1st "$@"
