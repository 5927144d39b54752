#!/usr/bin/env bash
# Recipe of pna-fmnist17: the paper's PNA rule (64 x 8, wave encoding) whose per-element
# head starts as the trained ff rule of training/ff-fmnist17 (graph inputs at
# zero, so step 0 is exactly that ff rule); second-order truncated BPTT (unroll 20) over
# random episode lengths of 150-300 steps; selection on two 1,000-step validation episodes.
# Why: a PNA rule trained from scratch learned far more slowly on 2 CPU cores
# (training/experiments/pna-scratch-tbptt-200), and first-order truncations drifted to
# worse rules (training/experiments/pna-init-ff-1st, ff-finetune-random).
# Run from the repository root; rerun with `--resume` to continue a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule pna --objective tbptt --unroll 20 --second-order \
  --inner-steps 200 --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 1.5 \
  --outer-steps 160 --meta-batch-size 1 --lr 3e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 10 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 2 --threads 1 \
  --init-head training/ff-fmnist17/best \
  --out training/pna-fmnist17 "$@"
