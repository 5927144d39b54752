#!/usr/bin/env bash
# Probe: the log-step head of training/experiments/pna-stephead, trained alone. Stage 4
# (training/experiments/pna-unroll100/best, the bundled pna-fmnist17) gets a zero head
# (`step_head_gain` 10) and only the head is meta-trained (`--train-only step_head`), at
# lr 3e-3, so it can move the log step by about 0.03 per update while the rest of the rule stays
# exactly stage 4. Same four networks and 100-step truncations as stage 4. Question: does the
# head learn a different step size per network (a tuned multiplier wants 8x on d1, 2x on w8
# and d2, 1x on task 17)? Outer step 0 is stage 4 itself.
# Run from the repository root; `--resume` continues a stopped run.
set -euo pipefail
python -m gnnopt.training --task fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2 --rule pna --objective tbptt \
  --rule-config '{"step_head_gain": 10.0}' --train-only step_head \
  --unroll 100 --second-order --inner-steps 1000 --segment-steps 100 --outer-steps 100 --meta-batch-size 1 \
  --lr 3e-3 --weight-decay 0 --clip 1.0 --warmup-steps 5 --eval-every 25 --eval-steps 1000 --eval-seeds 2 \
  --save-every 5 --seed 9 --threads 1 --init training/experiments/pna-unroll100/best \
  --out training/experiments/pna-stephead-only "$@"
