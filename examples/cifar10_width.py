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

import argparse
import sys

from gnnopt.data import load_dataset, synthetic_cifar10

from _sweep import NOT_A_RESULT, add_common_args, command_line, parse_ints, resolve_rules, run_sweep, settings

TASKS = {8: "cifar10-cnn-w8", 16: "cifar10-cnn-w16", 32: "cifar10-cnn-w32", 64: "cifar10-cnn-w64",
         128: "cifar10-cnn-w128"}  # paper ids 19, 20, 11, 21, 22


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, out="results/cifar10-width")
    p.add_argument("--widths", type=parse_ints, default=list(TASKS), help="a subset, e.g. 8,16 (default: all)")
    p.add_argument("--data-dir", default=None, help="the cifar-10-batches-py folder or its parent")
    p.add_argument("--synthetic", action="store_true", help="smoke run on random images (not a result)")
    args = p.parse_args(argv)
    if not set(args.widths) <= set(TASKS):
        p.error(f"unknown widths {sorted(set(args.widths) - set(TASKS))}; choose from {list(TASKS)}")
    chosen = settings(p, args, smoke=args.synthetic)
    rules = resolve_rules(args.rule)
    if rules is None:
        return 2
    if args.synthetic:
        data, note = synthetic_cifar10(device=args.device), f"synthetic data: {NOT_A_RESULT}"
        print(note.upper())
    else:
        try:
            data, note = load_dataset("cifar10", args.data_dir, device=args.device), None
        except FileNotFoundError as err:  # its message says where to get CIFAR-10
            print(f"error: {err}", file=sys.stderr)
            return 2
    run_sweep([TASKS[w] for w in args.widths], rules, baseline="adam", data=data, out=args.out, note=note,
              command=command_line("cifar10_width.py", argv), **chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
