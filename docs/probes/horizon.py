"""Probe (issue "Tuning-free", criterion 3): what does the shipped rule want over 5,000 steps?

Question. Over 5,000 steps on task 17 the rule (85.21%, stage 4 every step) falls 2.6 points
behind constant-lr Adam (87.77%), though it leads after 1,000. Short truncations bias a learned
step small (Wu et al. 2018); a schedule over the run's length is what a ``total_steps`` input
would let the next rule learn. Here the shipped rule's multiplier is set by hand, constant or
decayed by a cosine over the run (``CosineAnnealingLR`` on ``GNNOptimizer``'s ``lr``).

What would change the plan: if a larger constant step gains at 5,000 steps what it loses at
1,000, the rule's step is horizon-bound and the scale module needs the training progress as
an input (``total_steps``); if a cosine decay gains, the shipped rule lacks annealing and a
schedule term (or the scheduler a user adds) is the cheap fix; if neither, the gap is in the
direction, not the step.

Validation split only (seed 101): nothing here reads the test set.

    python docs/probes/horizon.py --variants const1,const2,cos1,cos2 --out runs/probe-horizon
"""
from __future__ import annotations

import re

import _probe
import torch

from gnnopt import GNNOptimizer
from gnnopt.rules import load_rule


def make(rule, variant: str, steps: int):
    """``constK``: multiplier K throughout; ``cosK``: K decayed to 0 by a cosine over ``steps``;
    ``wsdF``: multiplier 1, decayed linearly to 0 over the last fraction F of the run."""
    match = re.fullmatch(r"(const|cos|wsd)([\d.]+)", variant)
    if match is None:
        raise ValueError(f"Invalid variant {variant!r}: constK, cosK or wsdF, e.g. const2")
    kind, value = match[1], float(match[2])

    def build(model):
        opt = GNNOptimizer(model.named_parameters(), rule, lr=1.0 if kind == "wsd" else value)
        if kind == "cos":
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        elif kind == "wsd":
            start = (1 - value) * steps
            schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (steps - t) / (steps - start)))
        if kind != "const":
            opt.register_step_post_hook(lambda *_: schedule.step())
        return opt

    return build


def main() -> None:
    parser = _probe.parser(__doc__)
    parser.set_defaults(steps=5000)
    parser.add_argument("--variants", default="const1,const2,cos1,cos2")
    parser.add_argument("--task", default="fmnist17")
    args = parser.parse_args()
    rule = load_rule(args.rule)
    _probe.run(args, (({"task": args.task, "variant": v}, args.task, make(rule, v, args.steps))
                      for v in args.variants.split(",")), record_every=1000)


if __name__ == "__main__":
    main()
