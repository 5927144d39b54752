"""Width generalization on CIFAR-10: learned rules against tuned Adam as the CNN widens.

The follow-up study's sweep (SPEC sections 6-7): the CIFAR-10 CNN with widths h-2h-2h for
h = 8, 16, 32, 64, 128 (tasks 19, 20, 11, 21, 22), each trained for 1000 steps (batch 128)
by every rule and by Adam, seeds 101-105; Adam's learning rate is tuned on the validation
split (seeds 101-103). Rules meta-trained on FashionMNIST task 17 (1 input channel, widths
16-32-32) run unchanged here. Writes ``curves.csv``, ``results.md``, ``results.json`` and
``curves.png`` into ``--out``.

    python examples/cifar10_width.py --data-dir ~/data/cifar-10-batches-py --out results/cifar10-width
    python examples/cifar10_width.py --rule pna-fmnist17 --rule runs/pna/best --data-dir ~/data --widths 8,16
    python examples/cifar10_width.py --synthetic --rule runs/pna/best --out /tmp/width-smoke   # not a result

Data: download ``cifar-10-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html,
extract it and pass the ``cifar-10-batches-py`` folder (or its parent). ``--synthetic``
runs a smoke version (10 steps, seeds 101-102, a 2-point Adam grid) on random images with
random labels, to check that everything runs: a few minutes on 2 cores, mostly width 128.
"""
from __future__ import annotations

from _sweep import cifar10_main

TASKS = {8: "cifar10-cnn-w8", 16: "cifar10-cnn-w16", 32: "cifar10-cnn-w32", 64: "cifar10-cnn-w64",
         128: "cifar10-cnn-w128"}  # paper ids 19, 20, 11, 21, 22


def main(argv=None) -> int:
    return cifar10_main(argv, doc=__doc__, tasks=TASKS, axis="width", script="cifar10_width.py")


if __name__ == "__main__":
    raise SystemExit(main())
