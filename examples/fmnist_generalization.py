"""Width and depth generalization on full FashionMNIST: learned rules against tuned Adam.

The CIFAR-10 sweeps of the follow-up study (``cifar10_width.py``, ``cifar10_depth.py``)
on FashionMNIST, which these machines can measure offline: widths h-2h-2h for h = 8, 16,
32, 64, 128 (``fmnist17-w8`` ... ``fmnist17-w128``; w16 is task 17 itself) and 1 to 5 conv
layers (``fmnist17-d1`` ... ``fmnist17-d5``; d3 is w32, trained once, reported under both
names). Each net is trained for 1000 steps (batch 128) by every rule and by Adam, seeds
101-105, Adam's learning rate tuned on the validation split (10,000 training images held
out; seeds 101-103); final test accuracy on the full 10,000-image test set. This is the
run behind the README's generalization table.

    python examples/fmnist_generalization.py --sweep both --out results/fmnist-generalization
    python examples/fmnist_generalization.py --rule pna-fmnist17 --rule runs/ff/best --sweep width --widths 8,128
    python examples/fmnist_generalization.py --rule runs/new/best --no-baseline --sweep depth --depths 1   # rules only
    python examples/fmnist_generalization.py --smoke --rule runs/pna/best --out /tmp/fmnist-smoke   # not a result

Data: ``--data-dir``, ``GNNOPT_DATA`` or Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``). ``--smoke`` runs 10 steps, seeds 101-102 and a
2-point Adam grid on the small subset embedded in the package: it checks that everything
runs and is not a result.
"""
from __future__ import annotations

import argparse
import sys

from gnnopt.bench.data import load_dataset

from _sweep import NOT_A_RESULT, add_common_args, check_subset, command_line, parse_ints, resolve_rules, run_sweep, settings

WIDTHS = {h: f"fmnist17-w{h}" for h in (8, 16, 32, 64, 128)}
DEPTHS = {d: f"fmnist17-d{d}" for d in (1, 2, 3, 4, 5)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p, out="results/fmnist-generalization")
    p.add_argument("--sweep", choices=("width", "depth", "both"), default="both")
    p.add_argument("--widths", type=parse_ints, default=list(WIDTHS), help="a subset, e.g. 8,16 (default: all)")
    p.add_argument("--depths", type=parse_ints, default=list(DEPTHS), help="a subset, e.g. 1,5 (default: all)")
    p.add_argument("--data-dir", default=None, help="a folder with the four FashionMNIST IDX files")
    p.add_argument("--smoke", action="store_true", help="tiny run on the embedded subset (not a result)")
    args = p.parse_args(argv)
    check_subset(p, "widths", args.widths, WIDTHS)
    check_subset(p, "depths", args.depths, DEPTHS)
    chosen = settings(p, args, smoke=args.smoke)
    rules = resolve_rules(args.rule)
    if rules is None:
        return 2
    try:
        data = load_dataset("fmnist", args.data_dir, device=args.device, embedded=args.smoke)
    except FileNotFoundError as err:  # its message says how to get FashionMNIST
        print(f"error: {err}", file=sys.stderr)
        return 2
    note = f"embedded FashionMNIST subset: {NOT_A_RESULT}" if args.smoke else None
    if note:
        print(note.upper())
    tasks = [WIDTHS[w] for w in args.widths] if args.sweep in ("width", "both") else []
    tasks += [DEPTHS[d] for d in args.depths] if args.sweep in ("depth", "both") else []
    run_sweep(tasks, rules, baseline=None if args.no_baseline else "adam", data=data, out=args.out, note=note,
              command=command_line("fmnist_generalization.py", argv), resume=args.resume,
              tune_rule_lr=args.tune_rule_lr, **chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
