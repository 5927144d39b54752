#!/usr/bin/env bash
# Recipe of ff-fmnist17: the paper's FF rule (hidden 64, 2 layers) with first-order truncated
# BPTT (unroll 20) over 200-step episodes, meta lr 1e-3 with a cosine schedule over 300 outer
# steps; the checkpoint is the one selected on one 1,000-step validation episode (outer step
# 175). A longer horizon than the greedy objective, whose short-horizon bias stalled ff at 79%
# (training/experiments/ff-greedy-100). Run from the repository root; `--resume` continues.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule ff --objective tbptt --unroll 20 \
  --inner-steps 200 --outer-steps 300 --meta-batch-size 1 \
  --lr 1e-3 --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 \
  --eval-every 25 --eval-steps 1000 --seed 0 --threads 1 \
  --out training/ff-fmnist17 "$@"
