"""Where a GNNOptimizer step's memory goes: resident size between the parts of two steps.

Builds an MLP (784-W-W-10) and a ``GNNOptimizer`` on it, then takes a graph step and a step in
between (``graph_every=2``), printing the process's resident memory above the start, in bytes
per parameter, before and after each part: the graph part's encoder and layers, and the
per-element readout (what is there before the encoder is the graph, the momenta old and new,
and the parameter and gradient copies). Run it with large blocks returned to the
system, or freed memory stays counted:

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/step_memory.py --rule pna:edge_hidden=8+message_hidden=8+head_hidden=8+layers=4

Linux only (reads ``/proc/self/statm``).
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from gnnopt import GNNOptimizer
from gnnopt.rules import base, create, pna


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", default="pna:edge_hidden=8+message_hidden=8+head_hidden=8+layers=4",
                        help="name[:key=value+key=value] of an untrained rule (the memory does not depend on weights)")
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(1)
    name, _, options = args.rule.partition(":")
    config = {k: int(v) for k, v in (kv.split("=") for kv in options.split("+"))} if options else {}
    model = nn.Sequential(nn.Linear(784, args.width), nn.ReLU(), nn.Linear(args.width, args.width), nn.ReLU(),
                          nn.Linear(args.width, 10))
    params = sum(p.numel() for p in model.parameters())
    nn.functional.cross_entropy(model(torch.randn(128, 784)), torch.randint(0, 10, (128,))).backward()
    rule = create(name, **config)
    start = _resident()

    def report(what: str) -> None:
        print(f"| {what} | {(_resident() - start) / params:.0f} |", flush=True)

    def traced(owner, attr: str, what: str) -> None:
        inner = getattr(owner, attr)

        def wrapper(*a, **k):
            report(f"before {what}")
            out = inner(*a, **k)
            report(f"after {what}")
            return out
        setattr(owner, attr, wrapper)

    traced(pna.GraphEncoder, "forward", "encoder")
    traced(pna.PNALayer, "_forward_blocks", "a layer")
    traced(base.UpdateRule, "readout", "readout")
    print(f"{args.rule} on an MLP of {params:,} parameters\n\n| point | bytes per parameter above the start |\n|---|---:|")
    optimizer = GNNOptimizer(model, rule, graph_every=2)
    report("graph built")
    for step in ("graph step", "step in between"):
        optimizer.step()
        report(f"after the {step}")


if __name__ == "__main__":
    main()
