"""The evaluation protocol (SPEC section 7) and its CLI, ``python -m gnnopt.eval``.

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
import csv
import hashlib
import json
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .baselines import DEFAULT_LR_GRIDS, list_baselines, make_baseline
from .data import BatchStream, Dataset, evaluate, load_dataset
from .runtime import keep_freed_memory
from .tasks import Task, get_task

DEFAULT_SEEDS = (101, 102, 103, 104, 105)


def train_optimizee(
    task: Task,
    data: Dataset,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    *,
    steps: int,
    seed: int,
    split: str = "test",
    record_every: int | None = None,
) -> dict[str, Any]:
    """Train a fresh ``task`` model for ``steps`` steps; evaluate on ``data.<split>``.

    Returns ``{"loss", "accuracy", "curve": [{"step", "train_loss", "loss", "accuracy"}]}``
    where the curve is recorded every ``record_every`` steps (and at the end). A model
    whose training loss turns non-finite is recorded as diverged from that step on.
    """
    if split not in ("val", "test"):
        raise ValueError(f"Invalid split: {split!r} (use 'val' or 'test')")
    device = data.train.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.build_model()
    model.to(device)
    optimizer = make_optimizer(model)
    stream = BatchStream(data.train, task.batch_size, torch.Generator().manual_seed(seed))
    target = getattr(data, split)
    curve: list[dict[str, Any]] = []
    running, count = torch.zeros((), device=device), 0
    for step in range(1, steps + 1):
        x, y = stream.next()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running, count = running + loss.detach(), count + 1
        last = step == steps
        if last or (record_every and step % record_every == 0):
            train_loss = (running / count).item()
            running, count = torch.zeros((), device=device), 0
            eval_loss, accuracy = evaluate(model, target)
            curve.append({"step": step, "train_loss": train_loss, "loss": eval_loss, "accuracy": accuracy})
            if not math.isfinite(train_loss):
                break  # diverged: the last record stands for the rest of the run
    return {"loss": curve[-1]["loss"], "accuracy": curve[-1]["accuracy"], "curve": curve}


def run_learned_episode(rule, task: Task, data: Dataset, *, steps: int, seed: int, split: str = "val",
                        record_every: int | None = None) -> dict[str, Any]:
    """:func:`train_optimizee` with a ``GNNOptimizer`` driven by ``rule`` (no rule grads)."""
    from .optimizer import GNNOptimizer

    return train_optimizee(
        task, data, lambda m: GNNOptimizer(m.named_parameters(), rule), steps=steps, seed=seed,
        split=split, record_every=record_every,
    )


#: multipliers of a learned rule's update tried by ``--tune-rule-lr`` (1 = the rule as trained)
DEFAULT_RULE_LR_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)


class RunStore:
    """Finished training runs of an evaluation, one JSON file each in ``directory``.

    Every run (one method, learning rate, seed, task, split and length) is written as soon
    as it ends, atomically. With ``reuse=True`` a run whose file exists is read back
    instead of trained again, so a sweep stopped after hours resumes where it stopped. A
    learned rule is identified by a hash of its config and weights, not its name, so a
    retrained rule is never mistaken for the old one.
    """

    def __init__(self, directory: str | Path, *, reuse: bool = False) -> None:
        self.directory = Path(directory)
        self.reuse = reuse
        self.reused = 0

    def run(self, key: Mapping[str, Any], train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``train()``'s result for ``key`` (JSON-able), stored or read back."""
        key = json.loads(json.dumps(key, sort_keys=True))
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = self.directory / f"{key['task']}-{digest}.json"
        if self.reuse and path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                self.reused += 1
                return stored["result"]
        result = train()
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two sweeps may share a store
        tmp.write_text(json.dumps({"key": key, "result": result}))
        os.replace(tmp, path)
        return result


def rule_fingerprint(rule: nn.Module) -> str:
    """A short hash of a rule's class, config and weights (what :class:`RunStore` keys on)."""
    h = hashlib.sha256(type(rule).__name__.encode())
    h.update(json.dumps(getattr(rule, "config", {}), sort_keys=True).encode())
    for name, tensor in sorted(rule.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _stored(store: RunStore | None, key: dict[str, Any], train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return train() if store is None else store.run(key, train)


def _run_key(task: Task, data: Dataset, method: str, *, steps: int, seed: int, split: str,
             record_every: int | None) -> dict[str, Any]:
    return {"task": task.name, "data": data.source, "method": method, "steps": steps, "seed": seed,
            "split": split, "record_every": record_every}


def tune_lr(baseline: str, task: Task, data: Dataset, *, steps: int, seeds: Sequence[int],
            grid: Sequence[float] | None = None, progress=None,
            store: RunStore | None = None) -> tuple[float, dict[float, float]]:
    """The grid learning rate with the best mean *validation* accuracy after ``steps``."""
    return _tune(baseline, lambda lr: (lambda m: make_baseline(baseline, m, lr)), task, data, steps=steps,
                 seeds=seeds, grid=list(grid or DEFAULT_LR_GRIDS[baseline]), progress=progress, store=store)


def tune_rule_lr(rule, task: Task, data: Dataset, *, steps: int, seeds: Sequence[int],
                 grid: Sequence[float] = DEFAULT_RULE_LR_GRID, progress=None,
                 store: RunStore | None = None) -> tuple[float, dict[float, float]]:
    """The multiplier of a learned rule's update (``GNNOptimizer(lr=...)``) with the best
    mean *validation* accuracy after ``steps``: the same tuning Adam's learning rate gets."""
    from .optimizer import GNNOptimizer

    def make(lr: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
        return lambda m: GNNOptimizer(m.named_parameters(), rule, lr=lr)

    return _tune(f"rule {rule_fingerprint(rule)}", make, task, data, steps=steps, seeds=seeds, grid=list(grid),
                 progress=progress, store=store)


def _tune(method: str, make: Callable[[float], Callable[[nn.Module], torch.optim.Optimizer]], task: Task,
          data: Dataset, *, steps: int, seeds: Sequence[int], grid: list[float], progress,
          store: RunStore | None) -> tuple[float, dict[float, float]]:
    scores = {}
    for lr in grid:
        accs = []
        for seed in seeds:
            key = _run_key(task, data, f"{method} lr {lr!r}", steps=steps, seed=seed, split="val",
                           record_every=None)
            result = _stored(store, key, lambda: train_optimizee(task, data, make(lr), steps=steps, seed=seed,
                                                                 split="val"))
            accs.append(result["accuracy"])
            if progress is not None:
                progress.update(1)
        scores[lr] = statistics.fmean(accs)
    return max(scores, key=scores.get), scores


# --------------------------------------------------------------------------- CLI


def _parse_seeds(text: str) -> list[int]:
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
    p.add_argument("--task", default="fmnist17", help="task name or id; several separated by commas")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", type=_parse_seeds, default=list(DEFAULT_SEEDS), help="e.g. 101-105 or 101,103")
    p.add_argument("--lr", type=float, default=None, help="baseline learning rate (skips tuning)")
    p.add_argument("--tune-seeds", type=int, default=3, help="how many of the seeds tune the baseline lr")
    p.add_argument("--record-every", type=int, default=50)
    p.add_argument("--report-steps", type=_parse_seeds, default=[], metavar="STEPS",
                   help="also tabulate test accuracy at these recorded steps, e.g. 1000 (with --steps 5000)")
    p.add_argument("--rule-lr", type=float, default=1.0, help="lr multiplier of learned rules")
    p.add_argument("--tune-rule-lr", action="store_true",
                   help=f"tune each rule's lr multiplier on the validation split like Adam's lr "
                        f"(grid {', '.join(map(str, DEFAULT_RULE_LR_GRID))})")
    p.add_argument("--out", type=Path, default=Path("eval-out"))
    p.add_argument("--resume", action="store_true",
                   help="reuse the runs a stopped evaluation with the same --out finished (OUT/runs/)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--embedded", action="store_true", help="use the small embedded FashionMNIST subset (not for results)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return p


def compare(
    tasks: Sequence[str],
    data: Dataset | Callable[[Task], Dataset],
    rules: Mapping[str, Any],
    baselines: Sequence[str] = (),
    *,
    steps: int,
    seeds: Sequence[int],
    tune_seeds: int = 3,
    lr: float | None = None,
    grid: Sequence[float] | None = None,
    record_every: int = 50,
    rule_lr: float = 1.0,
    note: str | None = None,
    store: RunStore | None = None,
    rule_grid: Sequence[float] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate learned ``rules`` (by label) and tuned ``baselines`` on each task.

    Returns ``(rows, curves)``: one row per task and method with the final test accuracy of
    every seed, mean and std; the curves of every run. A baseline's lr is tuned on the
    validation split over ``grid`` with the first ``tune_seeds`` seeds unless ``lr`` is given.
    Two names of one layout (``cifar10-cnn-w32`` and ``cifar10-cnn-d3``) are run once and
    reported under both. ``note`` (e.g. "synthetic data: not a result") is added to every row.
    With a ``store``, every finished run is saved there (and reused if it says so). With a
    ``rule_grid``, each rule's update multiplier is tuned like a baseline's lr (on the
    validation split, ``tune_seeds`` seeds) instead of being ``rule_lr``.
    """
    from tqdm.auto import tqdm

    from .optimizer import GNNOptimizer

    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    done: dict[str, tuple[list, list]] = {}
    for requested in tasks:
        task = get_task(requested)
        if task.name in done:  # the same network under another name: reuse, relabel
            rows += [{**r, "task": requested} for r in done[task.name][0]]
            curves += [{**c, "task": requested} for c in done[task.name][1]]
            continue
        task_data = data(task) if callable(data) else data
        methods: list[tuple[str, Callable[[nn.Module], torch.optim.Optimizer], dict[str, Any], str]] = []
        for label, rule in rules.items():
            multiplier, info = rule_lr, {"lr": rule_lr}
            if rule_grid:
                tuning = list(seeds)[:tune_seeds]
                with tqdm(total=len(rule_grid) * len(tuning), desc=f"{requested}: tuning {label} lr on val") as bar:
                    multiplier, scores = tune_rule_lr(rule, task, task_data, steps=steps, seeds=tuning,
                                                      grid=rule_grid, progress=bar, store=store)
                info = {"lr": multiplier, "tuning_val_acc": {str(k): v for k, v in scores.items()}}
                label = f"{label} (lr ×{multiplier:g}, tuned)"
            identity = rule_fingerprint(rule) if store is not None else label
            methods.append((label, lambda m, r=rule, k=multiplier: GNNOptimizer(m.named_parameters(), r, lr=k), info,
                            f"rule {identity} lr {multiplier!r}"))
        for base in baselines:
            info: dict[str, Any] = {}
            chosen = lr
            if chosen is None:
                tuning = list(seeds)[:tune_seeds]
                points = list(grid or DEFAULT_LR_GRIDS[base])
                with tqdm(total=len(points) * len(tuning), desc=f"{requested}: tuning {base} lr on val") as bar:
                    chosen, scores = tune_lr(base, task, task_data, steps=steps, seeds=tuning, grid=points,
                                             progress=bar, store=store)
                info["tuning_val_acc"] = {str(k): v for k, v in scores.items()}
            info["lr"] = chosen
            methods.append((f"{base} (lr {chosen:g})", lambda m, b=base, l=chosen: make_baseline(b, m, l), info,
                            f"{base} lr {chosen!r}"))
        task_rows, task_curves = [], []
        with warnings.catch_warnings(), tqdm(total=len(methods) * len(seeds), desc=f"{requested}: evaluating") as bar:
            warnings.simplefilter("once")
            for label, make, info, method in methods:
                finals = []
                for seed in seeds:
                    key = _run_key(task, task_data, method, steps=steps, seed=seed, split="test",
                                   record_every=record_every)
                    result = _stored(store, key, lambda: train_optimizee(
                        task, task_data, make, steps=steps, seed=seed, split="test", record_every=record_every))
                    finals.append(result["accuracy"])
                    task_curves += [{"task": requested, "method": label, "seed": seed, **r} for r in result["curve"]]
                    bar.update(1)
                task_rows.append({"task": requested, "method": label, "seeds": list(seeds), "steps": steps,
                                  "test_acc": finals, "mean": statistics.fmean(finals),
                                  "std": statistics.pstdev(finals), "data": task_data.source, **info,
                                  **({"note": note} if note else {})})
        done[task.name] = (task_rows, task_curves)
        rows += task_rows
        curves += task_curves
    return rows, curves


def rule_labels(names: Sequence[str]) -> dict[str, str]:
    """Short labels for rule names (``runs/pna/best`` -> ``pna/best``) unless two would clash."""
    short = [_label(n) for n in names]
    return dict(zip(short if len(set(short)) == len(short) else names, names))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.rule and not args.baseline:
        print("error: give at least one --rule or --baseline", file=sys.stderr)
        return 2
    if args.steps < 1 or args.record_every < 1 or args.tune_seeds < 1:
        print("error: --steps, --record-every and --tune-seeds must be positive", file=sys.stderr)
        return 2
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    from .hub import load_rule

    try:
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
        rows, curves = compare(tasks, data_for, rules, args.baseline, steps=args.steps, seeds=args.seeds,
                               tune_seeds=args.tune_seeds, lr=args.lr, record_every=args.record_every,
                               rule_lr=args.rule_lr, store=store,
                               rule_grid=DEFAULT_RULE_LR_GRID if args.tune_rule_lr else None)
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


def _label(name: str) -> str:
    path = Path(name)
    return path.parent.name + "/" + path.name if path.name == "best" else path.name


def accuracy_at(rows: list[dict[str, Any]], curves: list[dict[str, Any]], steps: Sequence[int]) -> list[dict[str, Any]]:
    """Rows with ``at``: ``{step: {"mean", "std", "test_acc"}}`` of the test accuracy the curves
    recorded at each of ``steps`` (e.g. after 1,000 steps of a 5,000-step run)."""
    out = []
    for row in rows:
        at = {}
        for step in steps:
            accs = [c["accuracy"] for c in curves
                    if c["task"] == row["task"] and c["method"] == row["method"] and c["step"] == step]
            if accs:
                at[step] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs), "test_acc": accs}
        out.append({**row, "at": at} if at else row)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    extra = sorted({step for r in rows for step in r.get("at", {})})
    head = "".join(f" after {step} steps (%) |" for step in extra)
    lines = [f"| task | method |{head} test accuracy (%) | seeds | steps |", "|---|---|" + "---|" * (len(extra) + 3)]
    for r in rows:
        cells = "".join(f" {100 * r['at'][s]['mean']:.2f} ± {100 * r['at'][s]['std']:.2f} |" if s in r.get("at", {})
                        else " - |" for s in extra)
        lines.append(f"| {r['task']} | {r['method']} |{cells} {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
                     f"{len(r['seeds'])} | {r['steps']} |")
    return "\n".join(lines)


def write_outputs(out: Path, rows, curves, command: str, note: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted({r["data"] for r in rows})
    banner = f"> **{note}**\n\n" if note else ""
    (out / "results.md").write_text(
        f"{banner}{format_table(rows)}\n\nMean ± std (population) of the final test accuracy. Data: {'; '.join(sources)}.\n"
        f"Command: `{command}`\n")
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "method", "seed", "step", "train_loss", "loss", "accuracy"])
        writer.writeheader()
        writer.writerows(curves)
    try:
        plot_curves(curves, out / "curves.png")
    except ImportError as err:
        print(f"note: {err}", file=sys.stderr)


def plot_curves(curves: list[dict[str, Any]], path: Path) -> None:
    """Mean test accuracy and train loss against steps, one line per method, per task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need: pip install gnnopt[plot]") from err
    tasks = sorted({c["task"] for c in curves})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for method in dict.fromkeys(c["method"] for c in curves if c["task"] == task):
            points: dict[int, list[tuple[float, float]]] = {}
            for c in curves:
                if c["task"] == task and c["method"] == method:
                    points.setdefault(c["step"], []).append((c["accuracy"], c["train_loss"]))
            steps = sorted(points)
            row[0].plot(steps, [100 * statistics.fmean(a for a, _ in points[s]) for s in steps], label=method)
            row[1].plot(steps, [statistics.fmean(t for _, t in points[s]) for s in steps], label=method)
        row[0].set(title=f"{task}: test accuracy", xlabel="step", ylabel="test accuracy (%)")
        row[1].set(title=f"{task}: train loss", xlabel="step", ylabel="train loss (mean since last point)",
                   yscale="log")
        row[0].legend()
        row[0].grid(alpha=0.3)
        row[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
