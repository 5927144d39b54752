"""``es``: antithetic evolution strategies (Salimans et al. 2017; Metz et al. 2019).

The meta-gradient is estimated without differentiating through the unroll: each segment is
run ``2 * es_pairs + 1`` times from the same state on the same batches, with the trained
parameters moved by ``+-es_sigma`` times a Gaussian draw; the differences of the
meta-losses weight the draws. Its cost does not depend on how chaotic the unroll is, but its
noise grows with the number of parameters trained: pair it with ``train_only``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...functional import learned_update
from ...rules import UpdateRule
from ..config import TrainConfig
from ..episodes import Episode, kept_context, reused_context


def _rollout(rule: UpdateRule, ep: Episode, cfg: TrainConfig, batches: list[tuple[Tensor, Tensor]]):
    """Run ``len(batches) - 1`` inner steps from ``ep``'s state without a graph through the
    rule; returns the meta-losses (each update's loss on the next batch) and the end state."""
    opt, params, momenta, state, table = ep.optimizee, ep.params, ep.momenta, ep.rule_state, ep.context
    losses = []
    for t in range(len(batches) - 1):
        leaves = [p.detach().requires_grad_() for p in params]
        grads = torch.autograd.grad(opt.loss(leaves, batches[t]), leaves)
        with torch.no_grad():
            result = learned_update(rule, opt.graph, [p.detach() for p in leaves], grads, momenta, state,
                                    context=reused_context(cfg, ep.done + t, table), progress=(ep.done + t, ep.length))
            params = [p.detach() + u for p, u in zip(leaves, result.updates)]
            momenta, state, table = result.momenta, result.rule_state, kept_context(cfg, result)
            losses.append(opt.loss(params, batches[t + 1]).item())
    return losses, (params, momenta, state, table)


def segment(rule: UpdateRule, ep: Episode, cfg: TrainConfig, steps: int, weight: float, *,
            pipeline: bool | None = None, recompute: bool = False):
    """The ``es`` objective for one segment: antithetic Gaussian perturbations of the trained
    parameters, each pair run on the same batches from the same state, and ``weight *`` the
    estimated meta-gradient added to their ``.grad``. Then the segment is run once more with
    the parameters as they are, to advance the episode; returns that run's mean meta-loss
    and end state. With ``cfg.es_tail``, the perturbed runs are scored on their last steps only.
    The draws are seeded by the episode and its position, so a resumed run repeats them."""
    batches = [ep.optimizee.stream.next() for _ in range(steps + 1)]
    trained = [p for p in rule.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed((ep.seed * 1_000_003 + ep.done) % 2**62)
    centre = [p.detach().clone() for p in trained]
    scale = weight / (2 * cfg.es_sigma * cfg.es_pairs)
    for _ in range(cfg.es_pairs):
        noise = [torch.randn(p.shape, generator=gen).to(p) for p in trained]
        losses = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, c, n in zip(trained, centre, noise):
                    p.copy_(c + sign * cfg.es_sigma * n)
            run = _rollout(rule, ep, cfg, batches)[0]
            tail = run[-cfg.es_tail:] if cfg.es_tail is not None else run
            losses.append(sum(tail) / len(tail))
        for p, n in zip(trained, noise):
            step = n * ((losses[0] - losses[1]) * scale)
            p.grad = step if p.grad is None else p.grad.add_(step)
    with torch.no_grad():
        for p, c in zip(trained, centre):
            p.copy_(c)
    run, end = _rollout(rule, ep, cfg, batches)
    return sum(run) / len(run), end
