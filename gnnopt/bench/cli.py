"""``python -m gnnopt.eval``: evaluate learned rules and tuned baselines on tasks.

Train a fresh optimizee of a task for ``--steps`` steps (batch 128) with a learned rule or
a hand-designed baseline, once per seed (101-105 by default); record the train loss and
the test loss/accuracy every ``--record-every`` steps; report mean +- std of the final
test accuracy. A baseline's learning rate is tuned on the *validation* split over a grid
unless ``--lr`` is given. Outputs in ``--out``: ``curves.csv``, ``results.md``,
``results.json`` and, with matplotlib installed, ``curves.png``; every finished run is
also kept in ``OUT/runs/``, and ``--resume`` reuses those runs after a stop.

    python -m gnnopt.eval --task fmnist17 --rule pna-fmnist17 --baseline adam --out results/
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..rules import load_rule
from ..runtime import check_device, keep_freed_memory
from . import protocol
from .baselines import list_baselines
from .data import Dataset, load_dataset
from .report import accuracy_at, format_table, rule_labels, write_outputs
from .store import RunStore
from .tasks import Task, get_task, list_tasks


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            seeds.append(int(part))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gnnopt.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rule", action="append", default=[], metavar="NAME_OR_DIR",
                   help="a learned rule: bundled name, checkpoint directory or Hub repo id (repeatable)")
    p.add_argument("--baseline", action="append", default=[], choices=list_baselines(),
                   help="a hand-designed baseline (repeatable)")
    p.add_argument("--task", default="fmnist17",
                   help=f"task name or id; several separated by commas ({', '.join(list_tasks())})")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per run (default 1000)")
    p.add_argument("--seeds", type=parse_seeds, default=list(protocol.DEFAULT_SEEDS),
                   help=f"e.g. 101-105 or 101,103 (default {protocol.DEFAULT_SEEDS[0]}-{protocol.DEFAULT_SEEDS[-1]})")
    p.add_argument("--lr", type=float, default=None, help="baseline learning rate (skips tuning)")
    p.add_argument("--tune-seeds", type=int, default=3, help="how many of the seeds tune the baseline lr (default 3)")
    p.add_argument("--record-every", type=int, default=50, metavar="N",
                   help="record training loss and test accuracy every N steps (default 50)")
    p.add_argument("--report-steps", type=parse_seeds, default=[], metavar="STEPS",
                   help="also tabulate test accuracy at these recorded steps, e.g. 1000 (with --steps 5000)")
    p.add_argument("--rule-lr", type=float, default=1.0, help="lr multiplier of learned rules")
    p.add_argument("--tune-rule-lr", action="store_true",
                   help=f"tune each rule's lr multiplier on the validation split like Adam's lr "
                        f"(grid {', '.join(map(str, protocol.DEFAULT_RULE_LR_GRID))})")
    p.add_argument("--graph-every", type=int, default=None, metavar="K",
                   help="rules run their graph part every K steps only (GNNOptimizer(graph_every=K)); "
                        "default: each rule's own (its config's graph_every)")
    p.add_argument("--tell-length", action="store_true",
                   help="tell each rule the run's length (GNNOptimizer(total_steps=--steps)): its update "
                        "anneals over the run's end")
    p.add_argument("--out", type=Path, default=Path("eval-out"),
                   help="output folder: results.md/.json, curves.csv/.png, runs/ (default eval-out)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs a stopped evaluation with the same --out finished (OUT/runs/)")
    p.add_argument("--data-dir", default=None,
                   help="the data set's folder (default: $GNNOPT_DATA, then Debian's /usr/share/datasets/fashion-mnist, ...)")
    p.add_argument("--embedded", action="store_true", help="use the small embedded FashionMNIST subset (not for results)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.rule and not args.baseline:
        print("error: give at least one --rule or --baseline", file=sys.stderr)
        return 2
    bad_every = args.graph_every is not None and args.graph_every < 1
    if args.steps < 1 or args.record_every < 1 or args.tune_seeds < 1 or bad_every:
        print("error: --steps, --record-every, --tune-seeds and --graph-every must be positive", file=sys.stderr)
        return 2
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        check_device(args.device)
        tasks = [t.strip() for t in args.task.split(",") if t.strip()]
        for t in tasks:
            get_task(t)
        rules = {label: load_rule(name).to(args.device) for label, name in rule_labels(args.rule).items()}
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cache: dict[str, Dataset] = {}

    def data_for(task: Task) -> Dataset:
        if task.dataset not in cache:
            cache[task.dataset] = load_dataset(task.dataset, args.data_dir, device=args.device,
                                               embedded=args.embedded)
        return cache[task.dataset]

    try:
        store = RunStore(args.out / "runs", reuse=args.resume)
        rows, curves = protocol.compare(tasks, data_for, rules, args.baseline, steps=args.steps, seeds=args.seeds,
                               tune_seeds=args.tune_seeds, lr=args.lr, record_every=args.record_every,
                               rule_lr=args.rule_lr, store=store, graph_every=args.graph_every,
                               tell_length=args.tell_length,
                               rule_grid=protocol.DEFAULT_RULE_LR_GRID if args.tune_rule_lr else None)
    except FileNotFoundError as err:  # a missing data set: the message says how to get it
        print(f"error: {err}", file=sys.stderr)
        return 2
    missing = [s for s in args.report_steps if s % args.record_every and s != args.steps]
    if missing:
        print(f"error: --report-steps {missing} are not recorded (multiples of --record-every)", file=sys.stderr)
        return 2
    rows = accuracy_at(rows, curves, args.report_steps)
    write_outputs(args.out, rows, curves, " ".join(["python -m gnnopt.eval", *(argv or sys.argv[1:])]))
    print(format_table(rows))
    print(f"\nwrote {args.out}/results.md, results.json, curves.csv" +
          (", curves.png" if (args.out / "curves.png").exists() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
