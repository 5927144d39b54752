#!/usr/bin/env bash
# lstm, third stage: its second stage (training/experiments/lstm-unroll100/best) fine-tuned on
# persistent episodes of 1,000-5,000 steps (2,000 x U(0.5, 2.5)) of task 17, w8, d1 and d2, in
# 100-step second-order truncations, selected on 2,000-step validation episodes: the long
# episodes of the PNA rule's stages 2-3 (which made its long runs improve instead of decay)
# with its stage-4 truncation length. Run from the repository root; `--resume` continues it.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule lstm --rule-config '{"head_hidden": 64}' --objective tbptt \
  --unroll 100 --second-order --inner-steps 2000 --random-inner-steps-after 0 --random-inner-steps-min 0.5 \
  --random-inner-steps-max 2.5 --segment-steps 100 --outer-steps 200 --meta-batch-size 1 --lr 1e-4 \
  --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 --eval-every 50 --eval-steps 2000 --eval-seeds 2 \
  --save-every 5 --seed 7 --threads 1 --init training/experiments/lstm-unroll100/best \
  --out training/experiments/lstm-long "$@"
