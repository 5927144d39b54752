#!/usr/bin/env bash
# lstm, second stage: its first stage (training/lstm-fmnist17/best) fine-tuned as the PNA rule's
# stage 4 was (training/experiments/pna-unroll100): 100-step second-order truncations through
# fresh 1,000-step episodes of task 17, w8, d1 and d2. This skips the PNA rule's stages 2 and 3
# (long persistent episodes) to fit one session on one core.
# Run from the repository root; `--resume` continues a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule lstm --rule-config '{"head_hidden": 64}' --objective tbptt \
  --unroll 100 --second-order --inner-steps 1000 --segment-steps 100 --outer-steps 100 --meta-batch-size 1 \
  --lr 1e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 --eval-every 25 --eval-steps 1000 --eval-seeds 2 \
  --save-every 5 --seed 6 --threads 1 --init training/lstm-fmnist17/best \
  --out training/experiments/lstm-unroll100 "$@"
