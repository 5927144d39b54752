"""Step overhead of the learned optimizers against Adam and the optimizee itself.

For each task model and each rule in its paper configuration (``gnnopt.rules.create(name)``
defaults, untrained weights: the cost does not depend on their values), one run measures,
side by side and interleaved so that machine noise hits all of them alike:

* the optimizee forward + backward at batch 128 (random inputs, cross-entropy),
* ``torch.optim.Adam.step()``,
* ``GNNOptimizer.step()``,

and prints the median of each (after warm-up) as a Markdown table, then how the step time
grows from ``fmnist17`` (14,378 params) to ``cifar10-cnn-w128`` (891,402 params, 62x).

Targets: the ``pna`` step at most 2x forward+backward on task 17 and at most 3x on
``cifar10-cnn-w64`` (the reference implementation measured 5.8x and 9.3x); step time
growing no more than linearly with the parameter count (time ratio <= param ratio).

    python benchmarks/step_overhead.py --threads 2 --repeats 20

Compare ratios within one run, not milliseconds across runs. With more threads than idle
cores, every small operation of a rule waits for a descheduled thread and the GNN steps
look many times slower than they are: on a shared machine, use ``--threads 1``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from gnnopt import GNNOptimizer
from gnnopt.rules import create
from gnnopt.bench.tasks import get_task


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def measure(task_name: str, rules: list[str], args, device: torch.device) -> tuple[int, dict[str, float]]:
    """Median milliseconds of fwd+bwd, Adam and every rule's step on one task model."""
    task = get_task(task_name)
    torch.manual_seed(0)
    model = task.build_model().to(device)
    x = torch.randn(args.batch_size, *task.input_shape, device=device)
    y = torch.randint(0, task.num_classes, (args.batch_size,), device=device)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()

    steps = {"fwd+bwd": fwd_bwd, "adam": torch.optim.Adam(model.parameters(), lr=1e-3).step}
    for name in rules:
        steps[name] = GNNOptimizer(model, create(name)).step
    times: dict[str, list[float]] = {key: [] for key in steps}
    keys = list(steps)
    for r in range(args.warmup + args.repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:  # rotate the order
            if key != "fwd+bwd":
                fwd_bwd()  # fresh gradients for the optimizer (not timed)
            ms = _timed(steps[key], device)
            if r >= args.warmup:
                times[key].append(ms)
    return sum(p.numel() for p in model.parameters()), {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rules", default="ff,lstm,pna,rt,pna_lstm")
    parser.add_argument("--tasks", default="fmnist17,cifar10-cnn-w64,cifar10-cnn-w128")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rules, tasks = args.rules.split(","), args.tasks.split(",")

    results = {}
    print("| task | params | rule | step ms | step/Adam | step/(fwd+bwd) |")
    print("|---|---:|---|---:|---:|---:|")
    for task in tasks:
        params, ms = results[task] = measure(task, rules, args, device)
        print(f"| {task} | {params:,} | adam | {ms['adam']:.2f} | 1.0 | {ms['adam'] / ms['fwd+bwd']:.2f} |")
        for rule in rules:
            print(f"| {task} | {params:,} | {rule} | {ms[rule]:.1f} | {ms[rule] / ms['adam']:.0f} "
                  f"| {ms[rule] / ms['fwd+bwd']:.2f} |")
        print(f"| {task} | {params:,} | (fwd+bwd) | {ms['fwd+bwd']:.1f} | | 1.00 |", flush=True)
    if len(tasks) > 1:
        (p0, t0), (p1, t1) = results[tasks[0]], results[tasks[-1]]
        growth = ", ".join(f"{r} {t1[r] / t0[r]:.0f}x" for r in rules)
        verdict = "at most linear" if all(t1[r] / t0[r] <= p1 / p0 for r in rules) else "SUPERLINEAR for some"
        print(f"\n{tasks[0]} -> {tasks[-1]}: params {p1 / p0:.0f}x; step time {growth} "
              f"(fwd+bwd {t1['fwd+bwd'] / t0['fwd+bwd']:.0f}x): growth {verdict}.")


if __name__ == "__main__":
    main()
