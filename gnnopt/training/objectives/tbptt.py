"""``tbptt``: truncated back-propagation through ``unroll`` consecutive inner steps.

The meta-loss is the mean loss over a truncation's steps, each measured on the batch after
the update; gradients flow back through the whole truncation (through the parameters and
the updates; with ``second_order`` also through the gradient features, which first-order
truncations ignore).
"""
from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint as recomputed

from ...functional import learned_update
from ...rules import UpdateRule
from ..config import TrainConfig
from ..episodes import Episode, detach_state, kept_context, reused_context


def segment(rule: UpdateRule, ep: Episode, cfg: TrainConfig, steps: int, weight: float, *,
            pipeline: bool | None = None, recompute: bool = False):
    """``steps`` inner steps from ``ep`` in truncations of ``cfg.unroll``; returns ``(mean
    meta-loss, (params, momenta, rule state, context))``. A context kept between graph steps
    (``graph_every``) carries gradients within a truncation and is detached between them.

    ``recompute`` keeps only each inner step's inputs to the rule and runs the rule's forward
    again during the backward (activation checkpointing), instead of holding every step's
    rule activations until the truncation's backward. The rule's activations dominate a
    truncation's memory, so this makes long unrolls fit, for about one more rule forward per
    step; the gradients are the same up to float rounding (``benchmarks/recompute.py``).
    """
    opt, params, momenta, state = ep.optimizee, ep.params, ep.momenta, ep.rule_state
    total, count, table = 0.0, 0, ep.context
    # (no pipeline: a truncation's backward beside the next one's forward measured slower)
    update = functools.partial(recomputed, learned_update, use_reentrant=False) if recompute else learned_update
    done = 0
    batch = opt.stream.next()
    while done < steps:
        length = min(cfg.unroll, steps - done)
        current = [p.detach().requires_grad_() for p in params]
        metas = []
        for t in range(length):
            loss = opt.loss(current, batch)
            if t > 0:
                metas.append(loss)  # loss of the previous update, measured on a new batch
            grads = torch.autograd.grad(loss, current, retain_graph=t > 0 or cfg.second_order,
                                        create_graph=cfg.second_order)
            result = update(rule, opt.graph, current, grads, momenta, state, second_order=cfg.second_order,
                            context=reused_context(cfg, ep.done + done + t, table),
                            progress=(ep.done + done + t, ep.length))
            table = kept_context(cfg, result)
            current = [p + u for p, u in zip(current, result.updates)]
            momenta, state = result.momenta, result.rule_state
            batch = opt.stream.next()
        metas.append(opt.loss(current, batch))
        meta = torch.stack(metas).mean()
        (meta * (weight * length / steps)).backward()
        total, count = total + meta.item() * length, count + length
        params = [p.detach() for p in current]
        momenta = [m.detach() for m in momenta]
        state = detach_state(state)
        table = None if table is None else table.detach()
        done += length
    return total / max(count, 1), (params, momenta, state, table)
