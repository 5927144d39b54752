#!/usr/bin/env bash
# pna-var-fmnist17: the PNA rule trained with random episode lengths (SPEC section 4,
# "GNN-variable": after outer step A = 100, each episode lasts int(inner_steps * U(0.75, 2.5))).
# It continues stage 4 (training/experiments/pna-unroll100/best, the bundled pna-fmnist17),
# which is that run's outer step 100 on fixed 1,000-step episodes: those 100 steps are A, and
# from here on every episode of task 17, w8, d1 and d2 lasts 750-2,500 steps, meta-trained
# in 100-step second-order truncations as in stage 4. Validation: 1,000 steps; outer step 0
# is stage 4 itself.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective tbptt \
  --unroll 100 --second-order --inner-steps 1000 --segment-steps 100 \
  --random-inner-steps-after 0 --random-inner-steps-min 0.75 --random-inner-steps-max 2.5 \
  --outer-steps 100 --meta-batch-size 1 --lr 3e-5 --weight-decay 1e-4 --clip 1.0 --warmup-steps 5 \
  --eval-every 25 --eval-steps 1000 --eval-seeds 2 --save-every 5 --seed 8 --threads 1 \
  --init training/experiments/pna-unroll100/best \
  --out training/pna-var-fmnist17 "$@"
