"""Meta-training throughput: inner steps per second on task 17, against the optimizee itself.

For each rule (paper configuration) and objective, one run measures side by side:
* the optimizee's own forward+backward time at batch 128 (fmnist17 CNN), and
* the time of one meta-training inner step (``gnnopt.training.trainer.run_episode``: the
  optimizee's gradient, the rule's forward + backward, and for ``greedy`` the loss of the
  updated optimizee), averaged over episodes of the paper's 100 inner steps; for ``greedy``
  both with each backward beside the next forward (``pipelined``: ``python -m gnnopt.training
  --pipeline on``, the default for ``pna`` with 2+ threads) and one after the other
  (``sequential``: ``off``).

Like the command-line tools, it first calls ``gnnopt.runtime.keep_freed_memory()``
(``--default-malloc`` skips that, to see what it is worth).

Targets (issue 3, on 2 CPU cores): ``pna`` greedy >= 3x the inner steps per second of the
reference implementation (its inner step: ~150 ms), ``ff`` at least its ~33 ms.

    python benchmarks/meta_train_throughput.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from gnnopt.bench.data import load_dataset
from gnnopt.runtime import keep_freed_memory
from gnnopt.bench.tasks import get_task
from gnnopt.training import MetaTrainer, TrainConfig
from gnnopt.training.episodes import make_optimizee
from gnnopt.training.objectives import run_episode

REFERENCE_MS = {"ff": 33.0, "pna": 150.0}  # issue 3: the reference inner steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", default="ff,pna")
    p.add_argument("--objectives", default="greedy,tbptt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--episode", type=int, default=100,
                   help="inner steps per timed episode (default: the paper's 100; the pipelined backward's "
                        "first and last steps do not overlap, so short episodes understate it)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc thresholds alone")
    args = p.parse_args()
    tuned = False if args.default_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    data = load_dataset("fmnist", embedded=True)  # batches are the same size on the full set
    task = get_task("fmnist17")
    model = task.build_model()
    x, y = data.train.x[:128], data.train.y[:128]

    def fwd_bwd() -> float:
        start = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        return time.perf_counter() - start

    rows = []
    for rule in args.rules.split(","):
        for objective in args.objectives.split(","):
            cfg = TrainConfig(rule=rule, objective=objective, inner_steps=args.episode, embedded=True)
            trainer = MetaTrainer(cfg, "/tmp/gnnopt-bench", data=data, progress=False)
            opt = make_optimizee(task, trainer.data, 0, trainer.rule.graph_options, "cpu")
            # the pipeline applies to the greedy objective only (run_segment)
            modes = {"pipelined": True, "sequential": False} if objective == "greedy" else {"sequential": False}
            for pipeline in modes.values():
                run_episode(trainer.rule, opt, cfg, 2, 1.0, pipeline=pipeline)  # warm-up
            fwd_bwd()
            inner = {mode: [] for mode in modes}
            fb = []
            for _ in range(args.repeats):  # interleaved, so noise hits all alike
                for mode, pipeline in modes.items():
                    start = time.perf_counter()
                    run_episode(trainer.rule, opt, cfg, args.episode, 1.0, pipeline=pipeline)
                    inner[mode].append((time.perf_counter() - start) / args.episode)
                fb.append(statistics.median(fwd_bwd() for _ in range(5)))
            fb_ms = 1000 * statistics.median(fb)
            for mode in modes:
                ms = 1000 * statistics.median(inner[mode])
                rows.append((rule, objective, mode, ms, 1000 / ms, ms / fb_ms, fb_ms, REFERENCE_MS.get(rule)))
    malloc = "malloc thresholds raised (keep_freed_memory)" if tuned else "default malloc"
    print(f"task 17 (fmnist17), batch 128, {args.threads} threads, {malloc}\n")
    print("| rule | objective | backward | inner step ms | inner steps/s | / optimizee fwd+bwd | fwd+bwd ms "
          "| vs reference |")
    print("|---|---|---|---|---|---|---|---|")
    for rule, objective, mode, ms, rate, ratio, fb_ms, ref in rows:
        speedup = f"{ref / ms:.2f}x the reference's rate ({ref:.0f} ms)" if ref and objective == "greedy" else "-"
        print(f"| {rule} | {objective} | {mode} | {ms:.1f} | {rate:.1f} | {ratio:.2f} | {fb_ms:.1f} | {speedup} |")
    best = [ms for rule, objective, mode, ms, *_ in rows if rule == "pna" and objective == "greedy"]
    if best:
        print(f"\npna greedy, paper recipe (1,000 x 100 inner steps): {min(best) * 1e5 / 60_000:.0f} min "
              "at the faster rate")


if __name__ == "__main__":
    main()
