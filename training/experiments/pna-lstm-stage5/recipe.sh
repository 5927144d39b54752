#!/usr/bin/env bash
# pna_lstm, fifth stage: the multi-network long-episode stage (training/experiments/pna-lstm-multi/best)
# fine-tuned as the PNA rule's stage 4 was (training/experiments/pna-unroll100, the bundled rule):
# 100-step second-order truncations through fresh 1,000-step episodes of task 17, w8, d1 and d2,
# selected on the mean of two 1,000-step validation episodes per network. With stages 3-4 this
# chain now follows all of PNA's stages 2-4. Run from the repository root; `--resume` continues it.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna_lstm --objective tbptt \
  --unroll 100 --second-order --inner-steps 1000 --segment-steps 100 --outer-steps 100 --meta-batch-size 1 \
  --lr 1e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 --eval-every 25 --eval-steps 1000 --eval-seeds 2 \
  --save-every 5 --seed 6 --threads 1 --init training/experiments/pna-lstm-multi/best \
  --out training/experiments/pna-lstm-stage5 "$@"
