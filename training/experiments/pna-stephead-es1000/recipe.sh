#!/usr/bin/env bash
# Probe: the log-step head trained alone with evolution strategies over whole 1,000-step
# episodes: the meta-loss is then the horizon the evaluation measures, with no truncation and
# so no short-horizon bias (training/experiments/pna-stephead-es, on 100-step segments, learned
# smaller steps everywhere). Each outer step: a fresh episode of one of the four networks, run
# 9 times (4 antithetic pairs of perturbed heads, sigma 0.005, and the unperturbed rule) on the
# same batches. The rest of the rule stays exactly stage 4 (the bundled pna-fmnist17).
# Run from the repository root; `--resume` continues a stopped run (state saved every step).
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective es \
  --es-pairs 4 --es-sigma 0.005 --rule-config '{"step_head_gain": 10.0}' --train-only step_head \
  --inner-steps 1000 --outer-steps 40 --meta-batch-size 1 \
  --lr 2e-3 --weight-decay 0 --clip 1.0 --warmup-steps 2 --eval-every 10 --eval-steps 1000 --eval-seeds 2 \
  --save-every 1 --seed 10 --threads 1 --init training/experiments/pna-unroll100/best \
  --out training/experiments/pna-stephead-es1000 "$@"
