"""``greedy``: after each inner step, the loss of the updated optimizee on the same batch is
added to the meta-loss; the optimizee is detached after every step, so nothing is
back-propagated through the unroll (the objective of the reference code)."""
from __future__ import annotations

import torch

from ...functional import learned_update
from ...rules import UpdateRule
from ..config import TrainConfig
from ..episodes import Episode, detach_state, kept_context, reused_context
from ..pipeline import BackwardPipeline


def segment(rule: UpdateRule, ep: Episode, cfg: TrainConfig, steps: int, weight: float, *,
            pipeline: bool | None = None, recompute: bool = False):
    """``steps`` greedy inner steps from ``ep``; returns ``(mean meta-loss, (params, momenta,
    rule state, context))``. With ``pipeline`` (default: the rule's ``pipeline_backward``) and a CPU with
    two or more threads, each backward runs beside the next forward (:class:`BackwardPipeline`);
    the gradients are the same up to float rounding."""
    opt, params, momenta, state = ep.optimizee, ep.params, ep.momenta, ep.rule_state
    pipeline = rule.pipeline_backward if pipeline is None else pipeline
    total, table = 0.0, ep.context
    with BackwardPipeline(params[0].device, enabled=pipeline) as backward:
        for t in range(steps):
            batch = opt.stream.next()
            leaves = [p.requires_grad_() for p in params]
            grads = torch.autograd.grad(opt.loss(leaves, batch), leaves)
            result = learned_update(rule, opt.graph, params, grads, momenta, state,
                                    context=reused_context(cfg, ep.done + t, table), progress=(ep.done + t, ep.length))
            new = [p.detach() + u for p, u in zip(params, result.updates)]
            meta = opt.loss(new, batch)
            backward(meta * (weight / steps))
            total += meta.item()
            params = [p.detach() for p in new]
            momenta = result.momenta
            state = detach_state(result.rule_state)
            table = _detached(kept_context(cfg, result))
    return total / max(steps, 1), (params, momenta, state, table)


def _detached(table):
    return None if table is None else table.detach()
