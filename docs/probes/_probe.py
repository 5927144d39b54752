"""What every probe here shares: its options and its resumable loop of validation runs.

A probe is a list of jobs ``(key, task name, make_optimizer)``; each finished job appends one
row (its key, validation accuracy and loss, with ``record_every`` its curve) to
``OUT/results.jsonl``, and a rerun skips the keys already there.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from gnnopt.bench.data import load_dataset
from gnnopt.bench.protocol import train_optimizee
from gnnopt.bench.tasks import get_task

Job = tuple[dict[str, Any], str, Callable[[torch.nn.Module], torch.optim.Optimizer]]


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every probe has: ``--steps --seed --rule --threads --out``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--rule", default="pna-fmnist17")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    return p


def run(args: argparse.Namespace, jobs: Iterable[Job], *, record_every: int | None = None) -> None:
    """Train each job's fresh model for ``args.steps`` on the training split and score it on
    the validation split (never the test set)."""
    torch.set_num_threads(args.threads)
    data = load_dataset("fmnist")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    for key, task_name, make in jobs:
        if any(all(row.get(k) == v for k, v in key.items()) for row in rows):
            continue
        result = train_optimizee(get_task(task_name), data, make, steps=args.steps, seed=args.seed, split="val",
                                 record_every=record_every)
        row = {**key, "val_acc": result["accuracy"], "val_loss": result["loss"]}
        if record_every:
            row["curve"] = [(c["step"], round(c["accuracy"], 4)) for c in result["curve"]]
        print(json.dumps(row), flush=True)
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
