"""Step overhead of the learned optimizers against Adam and the optimizee itself.

For each task model and each rule in its paper configuration (``gnnopt.rules.create(name)``
defaults, untrained weights: the cost does not depend on their values), one run measures,
side by side and interleaved so that machine noise hits all of them alike:

* the optimizee forward + backward at batch 128 (random inputs, cross-entropy),
* ``torch.optim.Adam.step()``,
* ``GNNOptimizer.step()``,

and prints the median of each (after warm-up) as a Markdown table, then how the step time
grows from the first model to the last. Besides the task CNNs, ``--tasks`` takes plain MLPs
on flattened 28x28 inputs (``mlp-100k``, ``mlp-1m``, ``mlp-5m``, ``mlp-20m``: hidden widths
giving about 0.1M, 1M, 5M and 20M parameters) and a small Transformer encoder (``transformer-1m``, ``-5m``), where
a weight connection carries one number rather than a kernel. ``--graph-every 1,10`` times each
rule with its graph part run every step and every 10 steps (``GNNOptimizer(graph_every=K)``;
the average over K consecutive steps). ``--peak-memory`` adds the peak resident memory each optimizer adds on the CPU,
its graph and state included, in MiB and bytes per parameter: each optimizer (Adam too) in a
fresh process of its own, the ``ru_maxrss`` growth from after the model's first forward+backward
through a period of its steps and the next graph step (with ``MALLOC_MMAP_THRESHOLD_=65536``, so that freed blocks
leave the count); ``--memory-only`` prints that alone, with no timing. A rule
may carry options, ``name:key=value+key=value`` (``pna:fan_in_power=0.5`` times the per-tensor
fan-in factor of the update against ``pna`` without it).

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
import multiprocessing
import os
import resource
import statistics
import time

import torch
from torch import nn
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


#: extra models: name -> (builder, input shape, classes)
_MLP_WIDTHS = {"mlp-100k": (128,), "mlp-1m": (512, 512, 512), "mlp-5m": (2048, 2048), "mlp-20m": (4096, 4096)}
_TRANSFORMERS = {"transformer-1m": (128, 4), "transformer-5m": (256, 6)}  # width, layers


class _TokenTransformer(nn.Module):
    """A Transformer encoder classifying 28 tokens of 28 features (the rows of an image)."""

    def __init__(self, width: int, layers: int, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(28, width)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        return self.out(self.encoder(self.embed(x.flatten(1, 2))).mean(1))


def build(name: str) -> tuple[nn.Module, tuple[int, ...], int]:
    """A task's CNN, or one of the extra models, with its input shape and class count."""
    if name in _MLP_WIDTHS:
        widths = (784, *_MLP_WIDTHS[name])
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], 10)), (1, 28, 28), 10
    if name in _TRANSFORMERS:
        return _TokenTransformer(*_TRANSFORMERS[name]), (1, 28, 28), 10
    task = get_task(name)
    return task.build_model(), task.input_shape, task.num_classes


def measure(task_name: str, rules: list[str], args, device: torch.device) -> tuple[int, dict[str, float]]:
    """Median milliseconds of fwd+bwd, Adam and every rule's step (averaged over ``graph_every``
    consecutive steps) on one model."""
    torch.manual_seed(0)
    model, shape, classes = build(task_name)
    model = model.to(device)
    x = torch.randn(args.batch_size, *shape, device=device)
    y = torch.randint(0, classes, (args.batch_size,), device=device)

    def fwd_bwd() -> None:
        _forward_backward(model, x, y)

    steps = {"fwd+bwd": (fwd_bwd, 1), "adam": (torch.optim.Adam(model.parameters(), lr=1e-3).step, 1)}
    memory = peak_memory(task_name, rules, args) if args.peak_memory else {}
    for name in rules:
        for every in args.graph_every:
            with torch.no_grad(), _quiet():
                opt = GNNOptimizer(model, _rule(name), graph_every=every)
            steps[_key(name, every, args)] = (opt.step, every)
    times: dict[str, list[float]] = {key: [] for key in steps}
    keys = list(steps)
    for r in range(args.warmup + args.repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:  # rotate the order
            step, every = steps[key]
            total = 0.0
            for _ in range(every):  # a whole period of the amortized step
                if key != "fwd+bwd":
                    fwd_bwd()  # fresh gradients for the optimizer (not timed)
                total += _timed(step, device)
            if r >= args.warmup:
                times[key].append(total / every)
    params = sum(p.numel() for p in model.parameters())
    return params, {k: statistics.median(v) for k, v in times.items()}, memory


def _rule(spec: str):
    """``name`` or ``name:key=value+key=value`` -> ``create(name, **options)`` (values as JSON)."""
    import json

    name, _, options = spec.partition(":")
    pairs = (item.split("=", 1) for item in options.split("+") if item)
    return create(name, **{key: json.loads(value) for key, value in pairs})


def _forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Fresh gradients of the cross-entropy on one batch."""
    model.zero_grad(set_to_none=False)
    F.cross_entropy(model(x), y).backward()


def peak_memory(task_name: str, rules: list[str], args) -> dict[str, int]:
    """:func:`peak_bytes` of Adam (``"adam"``) and of every rule at every ``--graph-every``, by
    the rows' names."""
    memory = {"adam": peak_bytes(task_name, None, 1, args.batch_size, args.threads)}
    for name in rules:
        for every in args.graph_every:
            memory[_key(name, every, args)] = peak_bytes(task_name, name, every, args.batch_size, args.threads)
    return memory


def peak_bytes(task_name: str, rule: str | None, every: int, batch_size: int, threads: int) -> int:
    """The peak resident memory (bytes) that an optimizer (``rule``, or Adam for ``None``) adds
    to a fresh process holding ``task_name``'s model and its gradients, over ``every + 1`` steps
    (a period of the amortized step and the next graph step, which replaces the kept context).
    Runs in a child process (:func:`_in_child`)."""
    context = multiprocessing.get_context("spawn")
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # read by the child's allocator at start
    with context.Pool(1) as pool:
        return pool.apply(_in_child, (task_name, rule, every, batch_size, threads))


def _in_child(task_name: str, rule: str | None, every: int, batch_size: int, threads: int) -> int:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, shape, classes = build(task_name)
    x, y = torch.randn(batch_size, *shape), torch.randint(0, classes, (batch_size,))
    _forward_backward(model, x, y)
    _forward_backward(model, x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad(), _quiet():
        opt = torch.optim.Adam(model.parameters(), lr=1e-3) if rule is None else GNNOptimizer(
            model, _rule(rule), graph_every=every)
    for _ in range(every + 1):
        _forward_backward(model, x, y)
        opt.step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # Linux reports KiB


def _key(rule: str, every: int, args) -> str:
    return rule if args.graph_every == [1] else f"{rule} (graph every {every})"


class _quiet:
    """Silence the warning about parameters outside the graph (Transformers have many)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rules", default="ff,lstm,pna,rt,pna_lstm")
    parser.add_argument("--tasks", default="fmnist17,cifar10-cnn-w64,cifar10-cnn-w128")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--graph-every", default="1", help="comma-separated K of GNNOptimizer(graph_every=K)")
    parser.add_argument("--peak-memory", action="store_true", help="add the column of peak resident memory added")
    parser.add_argument("--memory-only", action="store_true", help="only the peak memory of each optimizer, no timing")
    args = parser.parse_args()
    args.graph_every = [int(k) for k in args.graph_every.split(",")]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rules, tasks = args.rules.split(","), args.tasks.split(",")

    if args.memory_only:
        print("| model | params | optimizer | peak MiB added | bytes per parameter |\n|---|---:|---|---:|---:|")
        for task in tasks:
            params = sum(p.numel() for p in build(task)[0].parameters())
            for name, peak in peak_memory(task, rules, args).items():
                print(f"| {task} | {params:,} | {name} | {peak / 2 ** 20:.0f} | {peak / params:.0f} |", flush=True)
        return
    results = {}
    mem_head = " peak MiB added | bytes per parameter |" if args.peak_memory else ""
    print(f"| model | params | step | step ms | step/Adam | step/(fwd+bwd) |{mem_head}")
    print("|---|---:|---|---:|---:|---:|" + ("---:|---:|" if args.peak_memory else ""))
    for task in tasks:
        params, ms, mem = measure(task, rules, args, device)
        results[task] = (params, ms)
        for key in ["adam", *(k for k in ms if k not in ("adam", "fwd+bwd"))]:
            extra = f" {mem[key] / 2 ** 20:.0f} | {mem[key] / params:.0f} |" if args.peak_memory else ""
            print(f"| {task} | {params:,} | {key} | {ms[key]:.2f} | {ms[key] / ms['adam']:.1f} "
                  f"| {ms[key] / ms['fwd+bwd']:.2f} |{extra}")
        print(f"| {task} | {params:,} | (fwd+bwd) | {ms['fwd+bwd']:.1f} | | 1.00 |" + (" | |" if args.peak_memory else ""),
              flush=True)
    if len(tasks) > 1:
        (p0, t0), (p1, t1) = results[tasks[0]], results[tasks[-1]]
        keys = [k for k in t0 if k not in ("adam", "fwd+bwd")]
        growth = ", ".join(f"{k} {t1[k] / t0[k]:.0f}x" for k in keys)
        verdict = "at most linear" if all(t1[k] / t0[k] <= p1 / p0 for k in keys) else "SUPERLINEAR for some"
        print(f"\n{tasks[0]} -> {tasks[-1]}: params {p1 / p0:.0f}x; step time {growth} "
              f"(fwd+bwd {t1['fwd+bwd'] / t0['fwd+bwd']:.0f}x): growth {verdict}.")


if __name__ == "__main__":
    main()
