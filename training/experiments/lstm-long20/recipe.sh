#!/usr/bin/env bash
# lstm, third stage, with the PNA rule's stage-2 recipe (training/pna-long-fmnist17): its
# second stage (training/experiments/lstm-unroll100/best, which decays 82.5 -> 79.9% over
# 5,000 steps) fine-tuned on persistent task-17 episodes of 1,000-5,000 steps (2,000 x U(0.5, 2.5))
# in 20-step second-order truncations, one per outer step, selected on one 3,000-step validation
# episode. lstm-long (100-step truncations on four networks) only slowed the decay (82.4 -> 80.6%);
# this is the recipe that turned PNA's long runs from decay to improvement. Run from the repository
# root; `--resume` continues it.
set -euo pipefail
python -m gnnopt.training --task fmnist17 --rule lstm --objective tbptt --unroll 20 --second-order \
  --inner-steps 2000 --random-inner-steps-after 0 --random-inner-steps-min 0.5 --random-inner-steps-max 2.5 \
  --segment-steps 20 --outer-steps 1000 --meta-batch-size 1 --lr 1e-4 --weight-decay 1e-4 --clip 1.0 \
  --warmup-steps 20 --eval-every 100 --eval-steps 3000 --save-every 10 --seed 3 --threads 1 \
  --init training/experiments/lstm-unroll100/best \
  --out training/experiments/lstm-long20 "$@"
