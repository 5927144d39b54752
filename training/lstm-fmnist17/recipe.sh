#!/usr/bin/env bash
# Recipe of lstm-fmnist17 (started; stopped at outer step 48, resumable): the paper configuration of `lstm` (head widened to 64, the
# ff head's width) with its per-element head
# started as the trained ff rule (training/ff-fmnist17/best, graph/context inputs at
# zero), second-order truncated BPTT (unroll 20) over 150-300-step episodes, selection on two
# 1,000-step validation episodes: the recipe of pna-fmnist17 (its header says why).
# Run from the repository root; rerun with `--resume` to continue a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule lstm --rule-config '{"head_hidden": 64}' --objective tbptt --unroll 20 --second-order \
  --inner-steps 200 --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 1.5 \
  --outer-steps 160 --meta-batch-size 1 --lr 3e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 10 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 2 --threads 1 \
  --init-head training/ff-fmnist17/best \
  --out training/lstm-fmnist17 "$@"
