"""Depth generalization on CIFAR-10: learned rules against tuned Adam as the CNN deepens.

The follow-up study's sweep (SPEC sections 6-7): the CIFAR-10 CNN with 1 to 5 conv layers,
widths 32 / 32-64 / 32-64-64 / 32-64-64-128 / 32-64-64-128-128 (tasks 23, 24, 11, 25, 26),
each trained for 1000 steps (batch 128) by every rule and by Adam, seeds 101-105; Adam's
learning rate is tuned on the validation split (seeds 101-103). Rules meta-trained on
FashionMNIST task 17 (3 conv layers) run unchanged on every depth. Writes ``curves.csv``,
``results.md``, ``results.json`` and ``curves.png`` into ``--out``.

    python examples/cifar10_depth.py --data-dir ~/data/cifar-10-batches-py --out results/cifar10-depth
    python examples/cifar10_depth.py --rule pna-fmnist17 --rule runs/pna/best --data-dir ~/data --depths 1,5
    python examples/cifar10_depth.py --synthetic --rule runs/pna/best --out /tmp/depth-smoke   # not a result

Data: download ``cifar-10-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html,
extract it and pass the ``cifar-10-batches-py`` folder (or its parent). ``--synthetic``
runs a smoke version (10 steps, seeds 101-102, a 2-point Adam grid) on random images with
random labels, to check that everything runs: a couple of minutes on 2 cores.
"""
from __future__ import annotations

from _sweep import cifar10_main

TASKS = {1: "cifar10-cnn-d1", 2: "cifar10-cnn-d2", 3: "cifar10-cnn-d3", 4: "cifar10-cnn-d4",
         5: "cifar10-cnn-d5"}  # paper ids 23, 24, 11, 25, 26


def main(argv=None) -> int:
    return cifar10_main(argv, doc=__doc__, tasks=TASKS, axis="depth", script="cifar10_depth.py")


if __name__ == "__main__":
    raise SystemExit(main())
