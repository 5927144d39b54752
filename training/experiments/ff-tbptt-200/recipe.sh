#!/usr/bin/env bash
# Experiment (not shipped): ff with truncated BPTT (unroll 20) over 200-step episodes, to
# test whether a longer-horizon objective fixes the greedy objective's short-horizon bias.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule ff --objective tbptt --unroll 20 \
  --inner-steps 200 --outer-steps 300 --meta-batch-size 1 \
  --lr 1e-3 --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 \
  --eval-every 25 --eval-steps 1000 --seed 0 --threads 1 \
  --out training/experiments/ff-tbptt-200 "$@"
