#!/usr/bin/env bash
# Probe: as training/experiments/pna-stephead-es1000 (the log-step head alone, ES over whole
# 1,000-step episodes), but each perturbed run is scored on its last 100 steps only
# (`--es-tail 100`): the end of the episode, which the evaluation reads. The mean over all
# 1,000 steps (es1000) rewarded early progress and taught larger steps on every network alike.
# lr 1e-3 (es1000's 2e-3 moved the step scale x3.7 in 23 updates). Run from the repository
# root; `--resume` continues a stopped run (state saved every step).
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective es \
  --es-pairs 4 --es-sigma 0.005 --es-tail 100 --rule-config '{"step_head_gain": 10.0}' --train-only step_head \
  --inner-steps 1000 --outer-steps 40 --meta-batch-size 1 \
  --lr 1e-3 --weight-decay 0 --clip 1.0 --warmup-steps 2 --eval-every 10 --eval-steps 1000 --eval-seeds 2 \
  --save-every 1 --seed 11 --threads 1 --init training/experiments/pna-unroll100/best \
  --out training/experiments/pna-stephead-es1000-tail "$@"
