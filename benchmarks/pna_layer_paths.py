"""The PNA layer's two code paths side by side: dense layer blocks against per-edge scatters.

On a :class:`~gnnopt.graph.NeuralGraph` the layer reduces each layer block's messages over a
dense ``[targets, sources, M]`` view (``PNALayer._forward_blocks``); on a bare ``edge_index``
it gathers messages per edge and scatters them (``PNALayer._forward_edges``). Both compute the
same function (``tests/test_equivalences.py``). This times a rule's whole graph part (``embed``)
with one path and then the other, interleaved, without autograd (a ``step()``) and with a
backward through it (meta-training and distillation), and prints the medians:

    python benchmarks/pna_layer_paths.py --tasks fmnist17,fmnist17-d4 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from gnnopt.bench.tasks import get_task
from gnnopt.features import FEATURE_SIZE
from gnnopt.graph import build_neural_graph
from gnnopt.rules import create, load_rule
from gnnopt.rules.pna import PNALayer

PATHS = {"blocks": PNALayer._forward_blocks, "edges": PNALayer._forward_edges}


def _model(name: str) -> nn.Module:
    if name.startswith("mlp"):  # mlp-<hidden>: three hidden layers on flattened 28x28 inputs
        width = int(name.split("-")[1])
        return nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, 10))
    return get_task(name).build_model()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", default="pna-fmnist17", help="a saved rule, or pna:key=value+... (untrained)")
    parser.add_argument("--tasks", default="fmnist17,fmnist17-d4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rule.startswith("pna:"):
        options = dict(kv.split("=") for kv in args.rule[4:].split("+"))
        rule = create("pna", **{k: int(v) for k, v in options.items()})
    else:
        rule = load_rule(args.rule)
    print("| model | edges | autograd | blocks ms | edges ms | blocks/edges |")
    print("|---|---:|---|---:|---:|---:|")
    for name in args.tasks.split(","):
        named = list(_model(name).named_parameters())
        graph = build_neural_graph([n for n, _ in named], [p.shape for _, p in named])
        feats = torch.randn(graph.num_elements, FEATURE_SIZE)
        for grad in (False, True):
            times: dict[str, list[float]] = {path: [] for path in PATHS}
            for _ in range(args.repeats + 1):  # the first round warms up
                for path, forward in PATHS.items():
                    PNALayer.forward = forward
                    start = time.perf_counter()
                    with torch.set_grad_enabled(grad):
                        table, _ = rule.embed(feats, graph)
                        if grad:
                            table.square().sum().backward()
                    times[path].append((time.perf_counter() - start) * 1e3)
            blocks, edges = (statistics.median(times[p][1:]) for p in PATHS)
            print(f"| {name} | {graph.num_edges:,} | {'yes' if grad else 'no'} | {blocks:.1f} | {edges:.1f} | "
                  f"{blocks / edges:.2f} |", flush=True)


if __name__ == "__main__":
    main()
