#!/usr/bin/env bash
# An early pna-fmnist17 candidate (stopped at outer step 65, 65.8% validation at 50): the paper's PNA rule (64 x 8, wave encoding) with
# truncated BPTT over 200-step episodes (a longer horizon than the greedy objective, which
# showed short-horizon bias on ff; see training/experiments/). Run from the repository
# root; rerun with `--resume` to continue a stopped run. NOT yet shipped: see the issue notes.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule pna --objective tbptt --unroll 20 \
  --inner-steps 200 --outer-steps 300 --meta-batch-size 1 \
  --lr 3e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 \
  --eval-every 25 --eval-steps 1000 --save-every 5 --seed 0 --threads 1 \
  --out training/experiments/pna-scratch-tbptt-200 "$@"
