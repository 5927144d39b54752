#!/usr/bin/env bash
# Probe: the log-step head trained alone on stage 4, as in training/experiments/pna-stephead-only,
# but with evolution strategies instead of back-propagation through the unroll (`--objective es`):
# each 100-step segment runs 4 antithetic pairs of perturbed heads (sigma 0.005) and the
# unperturbed rule, on the same batches. Why: back-propagating through 100 second-order steps
# moved the head the wrong way and the meta-gradients became non-finite; ES needs no gradient
# through the unroll. The head has 65 weights; the rest of the rule stays exactly stage 4.
# Run from the repository root; `--resume` continues a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective es \
  --es-pairs 4 --es-sigma 0.005 --rule-config '{"step_head_gain": 10.0}' --train-only step_head \
  --inner-steps 1000 --segment-steps 100 --outer-steps 60 --meta-batch-size 1 \
  --lr 1e-3 --weight-decay 0 --clip 1.0 --warmup-steps 3 --eval-every 20 --eval-steps 1000 --eval-seeds 2 \
  --save-every 5 --seed 9 --threads 1 --init training/experiments/pna-unroll100/best \
  --out training/experiments/pna-stephead-es "$@"
