"""Probe (issue "Tuning-free"): does a per-tensor step factor from the layer's fan-in fit the
bundled rule to networks of other depths without a per-network multiplier?

Question. ``pna-fmnist17`` applies about one relative step size on every network; tuned per
network, its best multiplier is x8 on fmnist17-d1, x1 on task 17 and x0.5 on fmnist17-d4
(docs/RESULTS.md). If each tensor's update is scaled by ``(F_ref / fan_in) ** alpha`` (a
muP-like factor: fan_in = in-channels x kernel positions, F_ref = 144, task 17's middle
conv), one alpha might serve all three.

What would change the plan: an alpha > 0 that raises the validation accuracy of both d1 and
d4 over alpha = 0 and keeps task 17 within 0.5 points would make fan-in a structural input
of the next rule's scale (its per-tensor factor from the graph's shapes). If none does, the
scale module has to learn it from loss and gradient signals instead.

Validation split only (seed 101, 1,000 steps): nothing here reads the test set.

    python docs/probes/fanin_step.py --alphas 0,0.5,1 --tasks fmnist17-d1,fmnist17,fmnist17-d4 --out runs/probe-fanin
"""
from __future__ import annotations

import _probe
import torch

from gnnopt import GNNOptimizer
from gnnopt.functional import fan_in_factors
from gnnopt.rules import load_rule

F_REF = 144


def groups(model: torch.nn.Module, alpha: float) -> list[dict]:
    """One param group per tensor, its lr the fan-in factor (what ``fan_in_power`` now does
    inside the rule: :func:`gnnopt.functional.fan_in_factors`)."""
    named = list(model.named_parameters())
    factors = fan_in_factors(tuple(tuple(p.shape) for _, p in named), alpha, F_REF)
    return [{"params": [(name, p)], "lr": f} for (name, p), f in zip(named, factors)]


def main() -> None:
    parser = _probe.parser(__doc__)
    parser.add_argument("--alphas", default="0,0.5,1")
    parser.add_argument("--tasks", default="fmnist17-d1,fmnist17,fmnist17-d4")
    args = parser.parse_args()
    rule = load_rule(args.rule)
    _probe.run(args, (({"task": t, "alpha": a}, t, lambda m, a=a: GNNOptimizer(groups(m, a), rule))
                      for t in args.tasks.split(",") for a in map(float, args.alphas.split(","))))


if __name__ == "__main__":
    main()
