"""The meta-objectives, one module each: ``greedy``, ``tbptt`` and ``es``.

Each module's ``segment(rule, episode, cfg, steps, weight, *, pipeline, recompute)`` runs
``steps`` inner steps from the episode's state, adds ``weight *`` the meta-gradient of their
mean meta-loss to the rule's ``.grad``, and returns that meta-loss and the end state
(parameters, momenta, rule state, kept context). Every
inner step calls :func:`gnnopt.functional.learned_update`, the same pure function as
``GNNOptimizer.step``; only the grad mode differs.
"""
from __future__ import annotations

from ...rules import UpdateRule
from ..config import TrainConfig
from ..episodes import Episode, Optimizee
from . import es, greedy, tbptt

OBJECTIVES = {"greedy": greedy.segment, "tbptt": tbptt.segment, "es": es.segment}


def run_segment(rule: UpdateRule, ep: Episode, cfg: TrainConfig, steps: int, weight: float, *,
                pipeline: bool | None = None, recompute: bool = False) -> float:
    """Advance ``ep`` by ``steps`` inner steps, back-propagating ``weight *`` their mean
    meta-loss into the rule's ``.grad`` by ``cfg.objective``. Returns that mean meta-loss
    (a float, for logging). ``pipeline`` applies to ``greedy``, ``recompute`` to ``tbptt``."""
    loss, (params, momenta, state, table) = OBJECTIVES[cfg.objective](rule, ep, cfg, steps, weight,
                                                                      pipeline=pipeline, recompute=recompute)
    ep.params, ep.momenta, ep.rule_state = [p.detach() for p in params], [m.detach() for m in momenta], state
    ep.context = None if table is None else table.detach()
    ep.done += steps
    return loss


def run_episode(rule: UpdateRule, opt: Optimizee, cfg: TrainConfig, steps: int, weight: float, *,
                pipeline: bool | None = None, recompute: bool = False) -> float:
    """Run one whole ``steps``-step episode on a fresh ``opt`` (see :func:`run_segment`)."""
    return run_segment(rule, Episode.start(rule, opt, 0, steps), cfg, steps, weight, pipeline=pipeline,
                       recompute=recompute)


__all__ = ["OBJECTIVES", "run_episode", "run_segment"]
