"""The evaluation protocol (Kofinas et al. 2024, sec. 4.3): train fresh optimizees with a learned rule or a
tuned baseline, seed by seed, and record test accuracy and train loss.

A baseline's learning rate is tuned on the *validation* split over a grid; the test split
is only read for the reported runs.
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..optimizer import GNNOptimizer
from .baselines import DEFAULT_LR_GRIDS, TUNING_FREE, make_baseline
from .data import BatchStream, Dataset, evaluate
from .store import RunStore, rule_fingerprint, run_key, stored
from .tasks import Task, get_task

DEFAULT_SEEDS = (101, 102, 103, 104, 105)

#: multipliers of a learned rule's update tried by ``--tune-rule-lr`` (1 = the rule as trained)
DEFAULT_RULE_LR_GRID: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)


def train_optimizee(
    task: Task,
    data: Dataset,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    *,
    steps: int,
    seed: int,
    split: str = "test",
    record_every: int | None = None,
    progress=None,
) -> dict[str, Any]:
    """Train a fresh ``task`` model for ``steps`` steps; evaluate on ``data.<split>``.

    Returns ``{"loss", "accuracy", "curve": [{"step", "train_loss", "loss", "accuracy"}]}``
    where the curve is recorded every ``record_every`` steps (and at the end). A model
    whose training loss turns non-finite is recorded as diverged from that step on.
    ``progress`` (a tqdm bar) is advanced by one every step.
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
        if progress is not None:
            progress.update(1)
        running, count = running + loss.detach(), count + 1
        last = step == steps
        if last or (record_every and step % record_every == 0):
            train_loss = (running / count).item()
            running, count = torch.zeros((), device=device), 0
            eval_loss, accuracy = _evaluate(model, optimizer, target)
            curve.append({"step": step, "train_loss": train_loss, "loss": eval_loss, "accuracy": accuracy})
            if not math.isfinite(train_loss):
                break  # diverged: the last record stands for the rest of the run
    return {"loss": curve[-1]["loss"], "accuracy": curve[-1]["accuracy"], "curve": curve}


def _evaluate(model: nn.Module, optimizer: torch.optim.Optimizer, split) -> tuple[float, float]:
    """:func:`evaluate`, with an optimizer that has train/eval modes (Schedule-Free: its
    averaged iterate is the one to evaluate) switched to eval for the measurement."""
    modes = hasattr(optimizer, "eval") and hasattr(optimizer, "train")
    if modes:
        optimizer.eval()
    try:
        return evaluate(model, split)
    finally:
        if modes:
            optimizer.train()


def run_learned_episode(rule, task: Task, data: Dataset, *, steps: int, seed: int, split: str = "val",
                        record_every: int | None = None, graph_every: int | None = None) -> dict[str, Any]:
    """:func:`train_optimizee` with a ``GNNOptimizer`` driven by ``rule`` (no rule grads)."""
    return train_optimizee(
        task, data, lambda m: GNNOptimizer(m.named_parameters(), rule, graph_every=graph_every), steps=steps,
        seed=seed,
        split=split, record_every=record_every,
    )


def tune_lr(baseline: str, task: Task, data: Dataset, *, steps: int, seeds: Sequence[int],
            grid: Sequence[float] | None = None, progress=None,
            store: RunStore | None = None) -> tuple[float, dict[float, float]]:
    """The grid learning rate with the best mean *validation* accuracy after ``steps``."""
    return _tune(baseline, lambda lr: (lambda m: make_baseline(baseline, m, lr, total_steps=steps)), task, data,
                 steps=steps, seeds=seeds, grid=list(grid or DEFAULT_LR_GRIDS[baseline]), progress=progress, store=store)


def tune_rule_lr(rule, task: Task, data: Dataset, *, steps: int, seeds: Sequence[int],
                 grid: Sequence[float] = DEFAULT_RULE_LR_GRID, progress=None,
                 store: RunStore | None = None, graph_every: int | None = None,
                 total_steps: int | None = None) -> tuple[float, dict[float, float]]:
    """The multiplier of a learned rule's update (``GNNOptimizer(lr=...)``) with the best
    mean *validation* accuracy after ``steps``: the same tuning Adam's learning rate gets.
    The rule runs as it will be tested (``graph_every``, ``total_steps``)."""
    def make(lr: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
        return lambda m: GNNOptimizer(m.named_parameters(), rule, lr=lr, graph_every=graph_every,
                                      total_steps=total_steps)

    every = _graph_every(rule, graph_every)
    method = f"rule {rule_fingerprint(rule)}" + (f" graph_every {every}" if every > 1 else "") + \
        (f" total_steps {total_steps}" if total_steps is not None else "")
    return _tune(method, make, task, data, steps=steps, seeds=seeds, grid=list(grid), progress=progress,
                 store=store)


def _tune(method: str, make: Callable[[float], Callable[[nn.Module], torch.optim.Optimizer]], task: Task,
          data: Dataset, *, steps: int, seeds: Sequence[int], grid: list[float], progress,
          store: RunStore | None) -> tuple[float, dict[float, float]]:
    scores = {}
    for lr in grid:
        accs = []
        for seed in seeds:
            key = run_key(task, data, f"{method} lr {lr!r}", steps=steps, seed=seed, split="val",
                           record_every=None)
            result = _counted(store, key, lambda bar: train_optimizee(
                task, data, make(lr), steps=steps, seed=seed, split="val", progress=bar), steps, progress)
            accs.append(result["accuracy"])
        scores[lr] = statistics.fmean(accs)
    return max(scores, key=scores.get), scores


def _counted(store: RunStore | None, key: dict[str, Any], train: Callable[[Any], dict[str, Any]], steps: int,
             bar) -> dict[str, Any]:
    """``stored`` for a run of ``steps`` steps that advances ``bar`` (a tqdm bar counting steps, or
    ``None``) as it trains. Steps not trained (a run read back from the store, or the rest of one
    that diverged early) leave the bar's total rather than advance it, so its rate and time left
    describe the work actually done."""
    if bar is None:
        return stored(store, key, lambda: train(None))
    start = bar.n
    result = stored(store, key, lambda: train(bar))
    if bar.total is not None:
        bar.total -= start + steps - bar.n
        bar.refresh()
    return result


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
    graph_every: int | None = None,
    tell_length: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate learned ``rules`` (by label) and tuned ``baselines`` on each task.

    Returns ``(rows, curves)``: one row per task and method with the final test accuracy of
    every seed, mean and std; the curves of every run. A baseline's lr is tuned on the
    validation split over ``grid`` with the first ``tune_seeds`` seeds unless ``lr`` is given.
    Two names of one layout (``cifar10-cnn-w32`` and ``cifar10-cnn-d3``) are run once and
    reported under both. ``note`` (e.g. "synthetic data: not a result") is added to every row.
    With a ``store``, every finished run is saved there (and reused if it says so). With a
    ``rule_grid``, each rule's update multiplier is tuned like a baseline's lr (on the
    validation split, ``tune_seeds`` seeds) instead of being ``rule_lr``. ``graph_every`` is
    passed to every rule's ``GNNOptimizer`` (the amortized step; ``None``: each rule's default).
    With ``tell_length``, each rule is told the run's length (``total_steps=steps``: its update
    anneals at the end of the run).
    """
    from tqdm.auto import tqdm

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
                with tqdm(total=len(rule_grid) * len(tuning) * steps, desc=f"{requested}: tuning {label} lr on val",
                          unit="step") as bar:
                    multiplier, scores = tune_rule_lr(rule, task, task_data, steps=steps, seeds=tuning,
                                                      grid=rule_grid, progress=bar, store=store,
                                                      graph_every=graph_every,
                                                      total_steps=steps if tell_length else None)
                info = {"lr": multiplier, "tuning_val_acc": {str(k): v for k, v in scores.items()}}
                label = f"{label} (lr ×{multiplier:g}, tuned)"
            identity = rule_fingerprint(rule) if store is not None else label
            method = f"rule {identity} lr {multiplier!r}"
            every = _graph_every(rule, graph_every)
            if every > 1:
                method, info = f"{method} graph_every {every}", {**info, "graph_every": every}
            if every != rule.config["graph_every"]:  # not as the rule is meant to run
                label = f"{label} (graph every {every})"
            total = steps if tell_length else None
            if tell_length:
                label, method, info = f"{label} (total_steps {steps})", f"{method} total_steps {steps}", \
                    {**info, "total_steps": steps}
            methods.append((label, lambda m, r=rule, k=multiplier, t=total: GNNOptimizer(
                                m.named_parameters(), r, lr=k, graph_every=graph_every, total_steps=t),
                            info, method))
        for base in baselines:
            info: dict[str, Any] = {}
            chosen = lr
            if chosen is None and base in TUNING_FREE:  # at their defaults: what a user would run
                chosen = TUNING_FREE[base]
            elif chosen is None:
                tuning = list(seeds)[:tune_seeds]
                points = list(grid or DEFAULT_LR_GRIDS[base])
                with tqdm(total=len(points) * len(tuning) * steps, desc=f"{requested}: tuning {base} lr on val",
                          unit="step") as bar:
                    chosen, scores = tune_lr(base, task, task_data, steps=steps, seeds=tuning, grid=points,
                                             progress=bar, store=store)
                info["tuning_val_acc"] = {str(k): v for k, v in scores.items()}
            info["lr"] = chosen
            label = f"{base} (defaults)" if base in TUNING_FREE and lr is None else f"{base} (lr {chosen:g})"
            methods.append((label, lambda m, b=base, l=chosen: make_baseline(b, m, l, total_steps=steps), info,
                            f"{base} lr {chosen!r}"))
        task_rows, task_curves = [], []
        with warnings.catch_warnings(), tqdm(total=len(methods) * len(seeds) * steps, desc=f"{requested}: evaluating",
                                             unit="step") as bar:
            warnings.simplefilter("once")
            for label, make, info, method in methods:
                finals = []
                for seed in seeds:
                    key = run_key(task, task_data, method, steps=steps, seed=seed, split="test",
                                   record_every=record_every)
                    result = _counted(store, key, lambda progress: train_optimizee(
                        task, task_data, make, steps=steps, seed=seed, split="test", record_every=record_every,
                        progress=progress), steps, bar)
                    finals.append(result["accuracy"])
                    task_curves += [{"task": requested, "method": label, "seed": seed, **r} for r in result["curve"]]
                task_rows.append({"task": requested, "method": label, "seeds": list(seeds), "steps": steps,
                                  "test_acc": finals, "mean": statistics.fmean(finals),
                                  "std": statistics.pstdev(finals), "data": task_data.source, **info,
                                  **({"note": note} if note else {})})
        done[task.name] = (task_rows, task_curves)
        rows += task_rows
        curves += task_curves
    return rows, curves


def _graph_every(rule, graph_every: int | None) -> int:
    """The graph interval a rule runs with: ``graph_every``, or the rule's default."""
    return rule.config["graph_every"] if graph_every is None else graph_every
