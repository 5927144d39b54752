#!/usr/bin/env bash
# pna-lstm stage 6: stage 5 (training/experiments/pna-lstm-stage5/best) fine-tuned with random
# episode lengths, as pna-var is from pna's stage 4: every episode of task 17, w8, d1 and d2
# lasts int(1000 * U(0.75, 2.5)) steps, meta-trained in 100-step second-order truncations.
# The recurrent rule carries node states across steps, so episodes longer than its
# validation length are where it could drift. Validation: 1,000 steps; step 0 is stage 5.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna_lstm --objective tbptt \
  --unroll 100 --second-order --inner-steps 1000 --segment-steps 100 \
  --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 2.5 \
  --outer-steps 150 --meta-batch-size 1 --lr 1e-4 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 25 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 9 --threads 1 \
  --init training/experiments/pna-lstm-stage5/best \
  --out training/experiments/pna-lstm-var "$@"
