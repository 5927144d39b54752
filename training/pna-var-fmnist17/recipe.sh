#!/usr/bin/env bash
# Recipe of pna-var-fmnist17 (NOT RUN YET): the paper's "GNN-variable" recipe, the PNA rule
# trained on 100-step episodes whose length, after outer step A = 100, is drawn as
# int(100 * U(0.75, 2.5)); like pna-fmnist17 its head starts as the trained ff rule and the
# objective is second-order truncated BPTT. Run from the repository root; `--resume` continues.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule pna --objective tbptt --unroll 20 --second-order \
  --inner-steps 100 --random-inner-steps-after 100 --random-inner-steps-min 0.75 --random-inner-steps-max 2.5 \
  --outer-steps 300 --meta-batch-size 1 --lr 3e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 10 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 3 --threads 1 \
  --init-head training/ff-fmnist17/best \
  --out training/pna-var-fmnist17 "$@"
