"""Probe (issue "Tuning-free", criteria 1 and 3): does a nominal Adam term fix w8 and the long run?

Question. At its defaults the shipped rule loses to tuned Adam on w8 (-0.95 after 1,000 steps)
and on task 17 over 5,000 steps (85.35% told the length, against 87.77%); no step multiplier
closes either on validation, so the gap is in the direction. Harrison et al. (2022) stabilise a
learned optimizer with a nominal Adam term. Here, per tensor, a fraction B of the rule's update
is replaced by Adam's direction (m / (sqrt(v) + eps), betas 0.9 / 0.999, bias-corrected) scaled
to the rule's update RMS on that tensor:

    u = (1 - B) * u_rule - B * rms(u_rule) * d_adam / rms(d_adam)

so the step keeps the rule's per-tensor size (its fan-in and depth factors, its annealing) and
only the direction moves toward Adam's. B = 0 is the shipped rule.

What would change the plan: a B > 0 that gains on w8 and on task 17 at 5,000 steps while the
other networks hold would make the nominal term part of the update form (item 4 of the design
in docs/NEXT_RULE.md) at a fixed B, shipped with today's weights; if it gains nowhere, the
direction's long-run gap has to come from meta-training on long episodes.

Validation split only (seed 101): nothing here reads the test set.

    python docs/probes/nominal_adam.py --blends 0,0.25,0.5 --tasks fmnist17-w8 --out runs/probe-nominal
    python docs/probes/nominal_adam.py --blends 0,0.5 --tasks fmnist17 --steps 5000 --tell-length --out runs/probe-nominal-5000
"""
from __future__ import annotations

import _probe
import torch

from gnnopt import GNNOptimizer
from gnnopt.rules import load_rule


class Blend(torch.optim.Optimizer):
    """The rule's step with a fraction ``blend`` of each tensor's update turned to Adam's direction."""

    def __init__(self, model: torch.nn.Module, rule, blend: float, total_steps: int | None, kind: str = "adam"):
        self.inner = GNNOptimizer(model.named_parameters(), rule, total_steps=total_steps)
        super().__init__([p for _, p in model.named_parameters()], {"blend": blend})
        self.blend, self.kind, self.t = blend, kind, 0

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        self.inner.step()
        if self.blend == 0:
            return None
        self.t += 1
        for p, old in zip(params, before):
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            state["m"].lerp_(p.grad, 0.1)
            state["v"].lerp_(p.grad.square(), 0.001)
            if self.kind == "sign":  # Lion-like: the sign of the momentum, no second moment
                d = state["m"].sign()
            else:
                d = (state["m"] / (1 - 0.9 ** self.t)) / ((state["v"] / (1 - 0.999 ** self.t)).sqrt() + 1e-8)
            u = p - old
            scale = u.square().mean().sqrt() / d.square().mean().sqrt().clamp_min(1e-12)
            p.copy_(old + (1 - self.blend) * u - self.blend * scale * d)  # Adam descends along -d
        return None


def main() -> None:
    parser = _probe.parser(__doc__)
    parser.add_argument("--blends", default="0,0.25,0.5")
    parser.add_argument("--tasks", default="fmnist17-w8")
    parser.add_argument("--kind", choices=("adam", "sign"), default="adam",
                        help="the nominal direction: Adam's, or the sign of the 0.9 momentum (no second moment)")
    parser.add_argument("--tell-length", action="store_true", help="GNNOptimizer(total_steps=--steps)")
    args = parser.parse_args()
    rule = load_rule(args.rule)
    # the wrapper is the nominal term here: the rule runs without its own (pna-fmnist17 ships
    # B = 0.5 since this probe), so that B = 0 is the rule alone and B is the only blend
    rule.config["nominal_blend"] = 0.0
    total = args.steps if args.tell_length else None
    record = 1000 if args.steps > 1000 else None
    extra = {} if args.kind == "adam" else {"kind": args.kind}
    _probe.run(args, (({"task": t, "blend": b, "steps": args.steps, "told": total is not None, **extra}, t,
                       lambda m, b=b: Blend(m, rule, b, total, args.kind))
                      for t in args.tasks.split(",") for b in map(float, args.blends.split(","))),
               record_every=record)


if __name__ == "__main__":
    main()
