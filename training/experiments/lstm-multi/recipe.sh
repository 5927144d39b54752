#!/usr/bin/env bash
# lstm, fourth stage, with the PNA rule's stage-3 recipe (training/pna-multi-fmnist17): the
# long-episode stage (training/experiments/lstm-long20/best) fine-tuned on task 17, w8, d1 and
# d2 at once, two persistent 500-2,500-step episodes advancing 20 steps per outer step (second
# order), selected on the mean of one 2,000-step validation episode per network. For PNA this
# stage recovered the 1,000-step accuracy that the long-episode stage gave up. Run from the
# repository root; `--resume` continues it.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule lstm --objective tbptt \
  --unroll 20 --second-order --inner-steps 1000 --random-inner-steps-after 0 --random-inner-steps-min 0.5 \
  --random-inner-steps-max 2.5 --segment-steps 20 --outer-steps 300 --meta-batch-size 2 --lr 1e-4 \
  --weight-decay 1e-4 --clip 1.0 --warmup-steps 10 --eval-every 50 --eval-steps 2000 --save-every 10 \
  --seed 4 --threads 1 --init training/experiments/lstm-long20/best \
  --out training/experiments/lstm-multi "$@"
