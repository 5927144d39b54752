#!/usr/bin/env bash
# Recipe of the pna-fmnist17 candidate: the paper's PNA rule (64 x 8, wave encoding) with
# truncated BPTT over 200-step episodes (a longer horizon than the greedy objective, which
# showed short-horizon bias on ff; see training/experiments/). Run from the repository
# root; rerun with `--resume` to continue a stopped run. NOT yet shipped: see the issue notes.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule pna --objective tbptt --unroll 20 \
  --inner-steps 200 --outer-steps 300 --meta-batch-size 1 \
  --lr 3e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 \
  --eval-every 25 --eval-steps 1000 --save-every 5 --seed 0 --threads 1 \
  --out training/pna-fmnist17 "$@"
