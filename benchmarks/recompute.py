"""Memory and time of a second-order tbptt truncation, with and without ``--recompute``.

Each configuration runs in its own process (peak memory is per process): it builds the rule
(paper configuration) and one optimizee, runs one warm-up truncation, then times ``--repeats``
more and reports the peak resident memory they added over the process's memory before the
first one, and the time per inner step. ``--recompute`` (activation checkpointing of the rule,
``gnnopt.training.trainer.run_segment``) should cut the memory roughly by the share of the
rule's activations, for about one more rule forward per step.

    python benchmarks/recompute.py --task fmnist17 --unroll 20 --threads 2
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(task_name: str, rule_name: str, unroll: int, recompute: bool, repeats: int) -> dict:
    from gnnopt.bench.data import load_dataset
    from gnnopt.runtime import keep_freed_memory
    from gnnopt.training import MetaTrainer, TrainConfig
    from gnnopt.training.episodes import Episode, make_optimizee
    from gnnopt.training.objectives import run_segment

    keep_freed_memory()
    cfg = TrainConfig(task=task_name, rule=rule_name, objective="tbptt", unroll=unroll, second_order=True,
                      inner_steps=unroll * (repeats + 1), embedded=True)
    data = load_dataset("fmnist", embedded=True)  # batches are the same size on the full set
    trainer = MetaTrainer(cfg, "/tmp/gnnopt-recompute-bench", data=data, progress=False)
    optimizee = make_optimizee(trainer.task, data, 0, trainer.rule.graph_options, "cpu")
    ep = Episode.start(trainer.rule, optimizee, 0, cfg.inner_steps)
    before = _rss_mib()
    run_segment(trainer.rule, ep, cfg, unroll, 1.0, recompute=recompute)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run_segment(trainer.rule, ep, cfg, unroll, 1.0, recompute=recompute)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"added_peak_mib": peak - before, "ms_per_step": 1000 * seconds / (repeats * unroll)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="fmnist17")
    p.add_argument("--rule", default="pna")
    p.add_argument("--unroll", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", choices=["off", "on"], help=argparse.SUPPRESS)  # a child process's configuration
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.task, args.rule, args.unroll, args.one == "on", args.repeats)))
        return
    rows = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", mode], check=True,
                             capture_output=True, text=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.rule} on {args.task}, second-order tbptt, unroll {args.unroll}, {args.threads} threads")
    print("| recompute | added peak memory (MiB) | ms per inner step |")
    print("|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['added_peak_mib']:.0f} | {r['ms_per_step']:.1f} |")
    off, on = rows["off"], rows["on"]
    print(f"memory on/off: {on['added_peak_mib'] / off['added_peak_mib']:.2f}; "
          f"time on/off: {on['ms_per_step'] / off['ms_per_step']:.2f}")


if __name__ == "__main__":
    main()
