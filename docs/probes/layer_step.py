"""Probe (issue "Tuning-free"): which layers want the larger or smaller step?

Question. Tuned per network, ``pna-fmnist17``'s best multiplier is x8 on fmnist17-d1, x2 on
w8 and d2, x1 on task 17 and x0.5 on d4 (docs/RESULTS.md), and a per-tensor fan-in factor
(``fanin_step.py``) helps d1 and d4 but cannot serve d1 and w8 at once (w8's last layer has
the smaller fan-in, yet w8 wants the smaller step). Scaling one role of layer at a time (the
first conv, the hidden convs, the last linear) says where the step a network wants sits.

What would change the plan: if one role carries the gap (d1 gains as much from a larger step
on one role as from the whole x8, and w8 and task 17 lose nothing from it), the structural
factor is a per-role one and the scale module reads the role; if every role wants the same
factor, the step is a per-network scale that must come from loss or gradient signals.

Validation split only (seed 101, 1,000 steps): nothing here reads the test set.

    python docs/probes/layer_step.py --roles first,hidden,last --factors 4 \
        --tasks fmnist17-d1,fmnist17-w8,fmnist17 --graph-every 10 --out runs/probe-layer
"""
from __future__ import annotations

import _probe
import torch

from gnnopt import GNNOptimizer
from gnnopt.bench.tasks import get_task
from gnnopt.rules import load_rule


def role(name: str) -> str:
    layer = name.split(".")[0]
    if layer == "fc":
        return "last"
    return "first" if layer == "conv1" else "hidden"


def groups(model: torch.nn.Module, scaled: str, factor: float) -> list[dict]:
    return [{"params": [(n, p)], "lr": factor if scaled in ("all", role(n)) else 1.0}
            for n, p in model.named_parameters()]


def main() -> None:
    parser = _probe.parser(__doc__)
    parser.add_argument("--roles", default="first,hidden,last", help="roles to scale, one at a time (or 'all')")
    parser.add_argument("--factors", default="4")
    parser.add_argument("--tasks", default="fmnist17-d1,fmnist17-w8,fmnist17")
    parser.add_argument("--graph-every", type=int, default=10)
    args = parser.parse_args()
    rule = load_rule(args.rule)

    def make(scaled: str, factor: float):
        return lambda m: GNNOptimizer(groups(m, scaled, factor), rule, graph_every=args.graph_every)

    _probe.run(args, (({"task": t, "role": r, "factor": f}, t, make(r, f))
                      for t in args.tasks.split(",") for r in args.roles.split(",")
                      for f in map(float, args.factors.split(","))
                      if not (r == "hidden" and len(get_task(t).widths) == 1)))


if __name__ == "__main__":
    main()
