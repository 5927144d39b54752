"""Probe (issue "Tuning-free", criterion 3): does a nominal term that grows after step 1,000 lift long runs?

Question. Over 5,000 steps told the length, the nominal term at B = 1 (Adam's direction at the
rule's per-tensor step sizes) reached 90.23% on validation against 88.34% at the shipped
B = 0.5, but B = 1 costs the shallow networks at 1,000 steps (d1 -3.3, d2 -2.7;
docs/NEXT_RULE.md, session 17). A B that stays 0.5 for the first ``--hold`` steps and then rises
linearly to ``--to`` over ``--ramp`` steps leaves every 1,000-step result as it is and needs no
run length, so untold runs would gain too.

What would change the plan: a ramp within 0.5 points of B = 1 on task 17 at 5,000 steps (told
and untold) that holds d1 makes the ramp part of the update form (``nominal_blend`` as a
function of the step count), shipped with today's weights; a ramp that falls short, or that
costs d1 over 5,000 steps, leaves B(t) to the scale module (phase B).

Validation split only (seed 101): nothing here reads the test set.

    python docs/probes/nominal_ramp.py --tasks fmnist17,fmnist17-d1 --steps 5000 --out runs/probe-ramp
    python docs/probes/nominal_ramp.py --tasks fmnist17 --steps 5000 --tell-length --out runs/probe-ramp
"""
from __future__ import annotations

import _probe

from gnnopt import GNNOptimizer
from gnnopt.rules import load_rule


class Ramped(GNNOptimizer):
    """The rule with its nominal blend set before each step by ``schedule(steps taken)``."""

    def __init__(self, params, rule, schedule, **kwargs):
        super().__init__(params, rule, **kwargs)
        self.schedule, self.taken = schedule, 0

    def step(self, closure=None):
        self.rule.config["nominal_blend"] = self.schedule(self.taken)
        self.taken += 1
        return super().step(closure)


def ramp(start: float, end: float, hold: int, length: int):
    """``start`` for ``hold`` steps, then linear to ``end`` over ``length`` steps."""
    return lambda t: start + (end - start) * min(1.0, max(0.0, (t - hold) / length))


def main() -> None:
    parser = _probe.parser(__doc__)
    parser.add_argument("--tasks", default="fmnist17")
    parser.add_argument("--shapes", default="const,ramp", help="const (B = 0.5 throughout) and/or ramp")
    parser.add_argument("--hold", type=int, default=1000)
    parser.add_argument("--ramp", type=int, default=1000)
    parser.add_argument("--to", type=float, default=1.0)
    parser.add_argument("--tell-length", action="store_true", help="GNNOptimizer(total_steps=--steps)")
    args = parser.parse_args()
    total = args.steps if args.tell_length else None
    schedules = {"const": ramp(0.5, 0.5, 0, 1), "ramp": ramp(0.5, args.to, args.hold, args.ramp)}

    def make(shape):  # a fresh rule per run: the schedule writes into its config
        return lambda m: Ramped(m.named_parameters(), load_rule(args.rule), schedules[shape], total_steps=total)

    _probe.run(args, (({"task": t, "shape": s, **({"hold": args.hold, "ramp": args.ramp, "to": args.to}
                                                    if s == "ramp" else {}),
                        "steps": args.steps, "told": total is not None}, t, make(s))
                      for t in args.tasks.split(",") for s in args.shapes.split(",")),
               record_every=1000 if args.steps > 1000 else None)


if __name__ == "__main__":
    main()
