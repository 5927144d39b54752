"""Shared plumbing of the sweep examples: learned rules against a tuned baseline over tasks.

It is ``python -m gnnopt.eval``'s protocol (SPEC section 7) with the data set passed in
rather than loaded, so the same loop runs on full data, the embedded subset or synthetic
CIFAR-10: ``train_optimizee``, ``tune_lr`` (validation split only) and ``write_outputs``
do the work. Not part of the gnnopt package.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gnnopt import list_pretrained
from gnnopt.bench.data import Dataset
from gnnopt.bench.protocol import DEFAULT_RULE_LR_GRID, compare
from gnnopt.bench.report import format_table, rule_labels, write_outputs
from gnnopt.bench.store import RunStore
from gnnopt.rules import load_rule
from gnnopt.rules import UpdateRule
from gnnopt.runtime import keep_freed_memory

#: the line that marks every output measured on data that cannot give a result
NOT_A_RESULT = "not a result"

#: the paper's protocol (SPEC section 7) and a seconds-long smoke version of it
PROTOCOL = {"steps": 1000, "seeds": [101, 102, 103, 104, 105], "tune_seeds": 3, "grid": None, "record_every": 50}
SMOKE = {"steps": 10, "seeds": [101, 102], "tune_seeds": 1, "grid": (1e-3, 1e-2), "record_every": 5}


def parse_ints(text: str) -> list[int]:
    """``"101-105"`` or ``"8,16,128"`` (or a mix) -> a list of ints."""
    values: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        values.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return values


def add_common_args(p: argparse.ArgumentParser, out: str) -> None:
    """``--rule`` (repeatable), ``--steps``, ``--seeds``, ``--record-every``, ``--out``, ``--device``,
    ``--no-baseline``, ``--tune-rule-lr``, ``--resume``."""
    p.add_argument("--rule", action="append", default=[], metavar="NAME_OR_DIR",
                   help="bundled name, checkpoint directory or Hub repo id (repeatable; default: all bundled)")
    p.add_argument("--steps", type=int, default=None, help="default 1000 (10 for the smoke run)")
    p.add_argument("--seeds", type=parse_ints, default=None, help="default 101-105 (101-102 for the smoke run)")
    p.add_argument("--record-every", type=int, default=None,
                   help="test-set curve points every N steps (default 50; 5 for the smoke run). The final "
                        "accuracy does not depend on it; on wide nets the test passes cost more than training")
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip tuned Adam (to add a rule to a table whose Adam rows were measured before)")
    p.add_argument("--tune-rule-lr", action="store_true",
                   help="tune each rule's lr multiplier on the validation split, as Adam's lr is")
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs a stopped sweep with the same --out finished (OUT/runs/)")


def settings(p: argparse.ArgumentParser, args: argparse.Namespace, smoke: bool) -> dict:
    """The protocol (or its smoke version) with ``--steps`` / ``--seeds`` applied."""
    chosen = dict(SMOKE if smoke else PROTOCOL)
    if args.steps is not None:
        if args.steps < 1:
            p.error(f"Invalid --steps: {args.steps} (need a positive int)")
        chosen["steps"] = args.steps
    if args.seeds is not None:
        if not args.seeds:
            p.error("--seeds names no seed")
        chosen["seeds"] = args.seeds
    if args.record_every is not None:
        if args.record_every < 1:
            p.error(f"Invalid --record-every: {args.record_every} (need a positive int)")
        chosen["record_every"] = args.record_every
    return chosen


def command_line(script: str, argv: Sequence[str] | None) -> str:
    return " ".join([f"python examples/{script}", *(sys.argv[1:] if argv is None else argv)])


def resolve_rules(requested: Sequence[str]) -> dict[str, UpdateRule] | None:
    """The ``--rule`` values, else every bundled checkpoint, loaded and labelled; ``None`` (and
    a message on stderr) when there is none or one fails to load."""
    names = list(requested) or list_pretrained()
    if not names:
        print("error: no pretrained rule is bundled with this install yet (list_pretrained() is empty); "
              "pass --rule NAME_OR_DIR, e.g. a meta-training run's best/ directory", file=sys.stderr)
        return None
    try:
        return {label: load_rule(name) for label, name in rule_labels(names).items()}
    except (FileNotFoundError, ValueError) as err:  # a wrong path or a broken checkpoint, in words
        print(f"error: {err}", file=sys.stderr)
        return None


def run_sweep(tasks: Sequence[str], rules: Mapping[str, UpdateRule] | Sequence[str], *, baseline: str | None = "adam",
              steps: int, seeds: Sequence[int], tune_seeds: int, data: Dataset, out: Path, record_every: int,
              command: str, grid: Sequence[float] | None = None, note: str | None = None,
              resume: bool = False, tune_rule_lr: bool = False) -> list[dict]:
    """Evaluate each rule and the tuned ``baseline`` on each task (:func:`gnnopt.eval.compare`),
    write ``out`` and return the rows. ``note`` (e.g. "synthetic data: not a result") heads
    ``results.md`` and is added to every row. Each finished run is kept in ``out/runs``;
    ``resume`` reuses them. ``tune_rule_lr`` tunes each rule's update multiplier on the
    validation split (:data:`gnnopt.eval.DEFAULT_RULE_LR_GRID`)."""
    keep_freed_memory()
    if not isinstance(rules, Mapping):
        rules = {label: load_rule(name) for label, name in rule_labels(rules).items()}
    loaded = {label: rule.to(data.train.device) for label, rule in rules.items()}
    store = RunStore(out / "runs", reuse=resume)
    rows, curves = compare(tasks, data, loaded, [baseline] if baseline else [], steps=steps, seeds=seeds,
                           tune_seeds=tune_seeds, grid=grid, record_every=record_every, note=note, store=store,
                           rule_grid=DEFAULT_RULE_LR_GRID if tune_rule_lr else None)
    if store.reused:
        print(f"reused {store.reused} finished runs from {store.directory}")
    for row in rows:
        print(f"{row['task']}: {row['method']}: test accuracy {100 * row['mean']:.2f} ± {100 * row['std']:.2f}%")
    write_outputs(out, rows, curves, command, note=note)
    print(("\n" + note.upper() + "\n" if note else "\n") + format_table(rows))
    plot = ", curves.png" if (out / "curves.png").exists() else ""
    print(f"\nwrote {out}/results.md, results.json, curves.csv{plot}")
    return rows


def check_subset(p: argparse.ArgumentParser, option: str, picked: Sequence[int], family: Mapping[int, str]) -> None:
    """Exit with a usage error when ``picked`` names keys outside ``family``."""
    if not set(picked) <= set(family):
        p.error(f"unknown {option} {sorted(set(picked) - set(family))}; choose from {list(family)}")


def cifar10_main(argv, *, doc: str, tasks: dict[int, str], axis: str, script: str) -> int:
    """The CIFAR-10 sweep scripts' shared ``main``: ``--<axis>s`` picks keys of ``tasks``."""
    from gnnopt.bench.data import load_dataset, synthetic_cifar10

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_args(p, out=f"results/cifar10-{axis}")
    p.add_argument(f"--{axis}s", type=parse_ints, default=list(tasks),
                   help=f"a subset, e.g. {','.join(map(str, list(tasks)[:2]))} (default: all)")
    p.add_argument("--data-dir", default=None, help="the cifar-10-batches-py folder or its parent")
    p.add_argument("--synthetic", action="store_true", help="smoke run on random images (not a result)")
    args = p.parse_args(argv)
    picked = getattr(args, f"{axis}s")
    check_subset(p, f"{axis}s", picked, tasks)
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
    run_sweep([tasks[k] for k in picked], rules, baseline=None if args.no_baseline else "adam", data=data,
              out=args.out, note=note, command=command_line(script, argv), resume=args.resume,
              tune_rule_lr=args.tune_rule_lr, **chosen)
    return 0
