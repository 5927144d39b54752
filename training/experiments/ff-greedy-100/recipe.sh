#!/usr/bin/env bash
# Experiment (not shipped): ff, greedy objective, 100-step episodes: run from the repository root. Resumable:
# rerun with `--resume` (same --out) to continue a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule ff --objective greedy \
  --inner-steps 100 --outer-steps 1000 --meta-batch-size 1 \
  --lr 1e-3 --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 \
  --eval-every 50 --eval-steps 1000 --seed 0 --threads 1 \
  --out training/experiments/ff-greedy-100 "$@"
