#!/usr/bin/env bash
# pna-var-fmnist17's recipe at a third of its learning rate (1e-5 instead of 3e-5), else
# identical: the options given here come after the recipe's own, so they replace them.
set -euo pipefail
bash training/pna-var-fmnist17/recipe.sh --lr 1e-5 --out training/experiments/pna-var-lr1e-5 "$@"
