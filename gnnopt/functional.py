"""The learned update as one pure function, shared by ``GNNOptimizer.step`` and meta-training.

For every parameter element (Kofinas et al. 2024, sec. 4.3; Metz et al. 2019)::

    m_beta <- beta * m_beta + g                       for beta in BETAS
    x      =  preprocess([theta, g, m_0.5, ..., m_0.9999])       (14 features)
    c      =  rule.context(x, graph)                  (the graph part: per edge/node/tensor)
    d, m   =  rule.readout(x, c)                      (the per-element head)
    delta  =  d * lambda * exp(lambda * m) * s_t      (lambda = rule.config["update_scale"])

where ``s_t = (fan_in_ref / fan_in_t) ** fan_in_power * min(1, (depth_ref / depth) ** depth_power)``
is a fixed factor of each parameter tensor ``t`` from the model's layout (:func:`step_factors`;
1 with the default powers 0): a structural step size, larger for layers with few inputs and
smaller for wide ones, and smaller in models deeper than ``depth_ref``. With
``rule.config["nominal_blend"]`` B > 0, a fraction B of each tensor's ``delta`` then turns to
Adam's direction at the same RMS (:func:`nominal_blend`), its second moment kept in the rule
state (``NOMINAL_KEY``).

A ``context`` from an earlier step may be passed in, and is then read instead of running
the graph part again (the amortized step, ``GNNOptimizer(graph_every=K)``).

:func:`learned_update` returns ``delta`` (the caller adds ``lr * delta`` and applies weight
decay) and the new momenta. It runs under whatever grad mode the caller chose: no grad in
``step()``, grad into the rule's weights in meta-training. By default the features are
computed from detached parameters and gradients, so meta-gradients flow through ``delta``
only (first order); ``second_order=True`` keeps them attached, so that meta-training with
gradients taken with ``create_graph=True`` also sees how the features change with the
parameters.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from .features import BETAS, LazyFeatures, element_features, update_momenta
from .graph import NeuralGraph
from .rules.base import RuleState, UpdateRule


class Context(NamedTuple):
    """What the rule's graph part wrote (:meth:`~gnnopt.rules.UpdateRule.context`): kept and
    reused by the steps in between when the graph runs only every few steps."""

    table: Tensor | None  # [R, head_hidden], or None for a rule that reads no graph


class UpdateResult(NamedTuple):
    updates: list[Tensor]  # delta per parameter, shaped like it (float32 or the param dtype)
    momenta: list[Tensor]  # [len(BETAS), *param.shape] per parameter
    rule_state: RuleState
    context: Context  # the context this update read (fresh, or the one passed in)


def init_momenta(param: Tensor) -> Tensor:
    """Zero momenta for one parameter: ``[len(BETAS), *param.shape]`` in float32."""
    return torch.zeros((len(BETAS), *param.shape), dtype=torch.float32, device=param.device)


def learned_update(
    rule: UpdateRule,
    graph: NeuralGraph,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momenta: Sequence[Tensor],
    rule_state: RuleState = None,
    *,
    second_order: bool = False,
    context: Context | None = None,
    momenta_in_place: bool = False,
    progress: tuple[int, int | None] | None = None,
) -> UpdateResult:
    """Compute every parameter's learned update in one pass of ``rule`` over ``graph``.

    Args:
        rule: the learned update rule.
        graph: the neural graph of exactly this ordered list of parameters.
        params, grads: one tensor per parameter (grads already zero where absent).
        momenta: ``[len(BETAS), *shape]`` per parameter.
        rule_state: the rule's recurrent state from the previous step (stateful rules).
        second_order: let gradients flow through the parameter and gradient features.
        context: a context from an earlier step to read instead of running the rule's graph
            part (which also leaves ``rule_state`` as it is); ``None``: run it.
        momenta_in_place: without autograd, advance the float32 ``momenta`` in place (and
            return them) instead of writing new tensors: 20 bytes per parameter less at the
            step's peak (``GNNOptimizer.step``, which owns them).
        progress: ``(steps taken, the run's length or None)``, read by a rule's scale module
            (:func:`tensor_features`); ``None``: step 0 of a run of unknown length.

    Shapes:
        internally everything is flattened to ``P = graph.num_elements`` elements:
        features ``[P, 14]``, rule output ``[P, 2]``.
    """
    if not (len(params) == len(grads) == len(momenta) == graph.num_tensors):
        raise ValueError(
            f"graph has {graph.num_tensors} tensors but got {len(params)} params, "
            f"{len(grads)} grads and {len(momenta)} momenta"
        )
    keep = (lambda t: t) if second_order else (lambda t: t.detach())
    # without autograd (an optimizer step) nothing is kept for a backward, so the step writes
    # into fresh tables in place and never holds a whole feature table if the rule reads rows
    lean = not second_order and not torch.is_grad_enabled()
    sizes = [p.numel() for p in params]
    # momenta are float32 like the features; cast any other (a state cast to a float64 or
    # float16 parameter's dtype), which would otherwise break or degrade the rule's matmuls
    betas = torch.tensor(BETAS, dtype=torch.float32, device=params[0].device if params else None)
    if lean and momenta_in_place and all(m.dtype == torch.float32 for m in momenta):
        for m, g in zip(momenta, grads):  # m_beta <- beta * m_beta + g, in the caller's tensors
            torch.addcmul(g.float(), betas.view(-1, *[1] * g.dim()), m, out=m)
        new_momenta = list(momenta)
    elif lean:  # each tensor's new momenta written straight into one table
        new = betas.new_empty(len(BETAS), sum(sizes))
        for m, g, part in zip(momenta, grads, new.split(sizes, dim=1)):
            torch.addcmul(g.reshape(1, -1).float(), betas.unsqueeze(1), m.reshape(len(BETAS), -1).float(), out=part)
        new_momenta = [m.view(len(BETAS), *p.shape) for m, p in zip(new.split(sizes, dim=1), params)]
    else:
        grad = torch.cat([keep(g).reshape(-1).float() for g in grads])
        old = torch.cat([m.reshape(len(BETAS), -1).float() for m in momenta], dim=1)
        new = update_momenta(old, grad, betas)
        new_momenta = [m.reshape(len(BETAS), *p.shape) for m, p in zip(new.split(sizes, dim=1), params)]

    if lean and rule.reads_features_by_rows:  # read from each parameter's own tensors, by rows
        feats = LazyFeatures(params, grads, new_momenta)
    elif lean:
        feats = element_features(torch.cat([p.reshape(-1).float() for p in params]),
                                 torch.cat([g.reshape(-1).float() for g in grads]),
                                 torch.cat([m.reshape(len(BETAS), -1) for m in new_momenta], dim=1))
    else:
        theta = torch.cat([keep(p).reshape(-1).float() for p in params])
        feats = element_features(theta, grad, new)
    blend = rule.config["nominal_blend"]
    if blend:  # the nominal term's second moment rides in the rule state, beside the rule's own
        rule_state = dict(rule_state or {})
        second = advance_second_moment(rule_state.pop(NOMINAL_KEY, None), grads,
                                       in_place=lean and momenta_in_place)
        rule_state = rule_state or None
    if context is None:
        table, rule_state = rule.context(feats, graph, rule_state)
        context = Context(table)
    out = rule.readout(feats, context.table, graph)
    del feats
    scale = rule.config["update_scale"]
    direction, magnitude = out.unbind(dim=1)
    if lean:  # d * scale * exp(scale * m), in the rule's fresh output
        delta = direction.mul_(scale).mul_(magnitude.mul_(scale).exp_())
    else:
        delta = direction * scale * torch.exp(scale * magnitude)

    factors = step_factors(graph.shapes, *(rule.config[k] for k in ("fan_in_power", "fan_in_ref", "depth_power",
                                                                     "depth_ref")))
    scaled = (lambda d, f: d.mul_(f)) if lean else (lambda d, f: d * f)
    updates = [d.view(p.shape) if f == 1.0 else scaled(d.view(p.shape), f)
               for d, p, f in zip(delta.split(sizes), params, factors)]
    if rule.scale is not None:  # each tensor's learned step multiplier
        multipliers = rule.scale(tensor_features(graph, params, grads, progress, rule.config["fan_in_ref"])).exp()
        updates = [scaled(u, m) for u, m in zip(updates, multipliers)]
    if blend:
        rule_state = {**(rule_state or {}), NOMINAL_KEY: second}
        updates = nominal_blend(updates, [m[NOMINAL_MOMENTUM] for m in new_momenta], second, blend, in_place=lean)
    return UpdateResult(updates, new_momenta, rule_state, context)


#: the rule-state key of the nominal term's second moment (one float32 row over all elements)
NOMINAL_KEY = "nominal_second_moment"
#: the momentum that is the nominal term's first moment: ``m_0.9`` (``BETAS[1]``)
NOMINAL_MOMENTUM = BETAS.index(0.9)
NOMINAL_BETA2 = 0.999


def advance_second_moment(second: Tensor | None, grads: Sequence[Tensor], *, in_place: bool = False) -> Tensor:
    """``v <- 0.999 v + 0.001 g^2`` over all elements in order (``[P]`` float32; ``None``: zeros,
    the start of a run): the second moment of the nominal term."""
    sizes = [g.numel() for g in grads]
    if second is None:
        second = torch.zeros(sum(sizes), device=grads[0].device if grads else None)
    new = second.mul_(NOMINAL_BETA2) if in_place else second.mul(NOMINAL_BETA2)
    if grads:
        flat = [g.detach().reshape(-1).float() for g in grads]
        torch._foreach_addcmul_(list(new.split(sizes)), flat, flat, value=1 - NOMINAL_BETA2)
    return new


def nominal_blend(updates: list[Tensor], momenta: Sequence[Tensor], second: Tensor, blend: float, *,
                  in_place: bool = False) -> list[Tensor]:
    """``(1 - B) * u - B * rms(u) * a / rms(a)`` for each tensor: a fraction ``B`` of its learned
    update ``u`` turned to Adam's direction ``a = m / (sqrt(v) + eps)`` (``m`` its momentum
    ``m_0.9``, ``v`` its second moment, the tensor's slice of ``second``:
    :func:`advance_second_moment`) at the size of the learned update, so that the step keeps the
    rule's per-tensor size (its structural factors, its annealing) and only its direction moves.
    Adam's bias corrections scale a whole tensor alike, so the per-tensor normalisation makes them
    moot. A nominal Adam term steadies a learned direction where it is unsure (Harrison et al.
    2022; measured in ``docs/NEXT_RULE.md``). ``in_place`` (the optimizer's step) writes into
    ``updates``; all tensors at once (``torch._foreach_*``, as ``torch.optim`` does)."""
    if not updates:
        return updates
    with torch.no_grad():  # Adam's direction, in one buffer: 1 / (sqrt(v) + eps), times m
        adam = torch._foreach_sqrt([v.view(u.shape) for v, u in zip(second.split([u.numel() for u in updates]),
                                                                     updates)])
        torch._foreach_add_(adam, 1e-12)
        torch._foreach_reciprocal_(adam)
        torch._foreach_mul_(adam, [m.detach() for m in momenta])
        adam_norms = torch.stack(torch._foreach_norm(adam))
    norms = torch._foreach_norm(updates) if in_place else [torch.linalg.vector_norm(u) for u in updates]
    factors = blend * torch.stack(norms) / adam_norms.clamp_min(1e-30)  # B rms(u) / rms(a): the sizes cancel
    if in_place:
        torch._foreach_mul_(adam, list(factors.unbind()))
        torch._foreach_mul_(updates, 1 - blend)
        torch._foreach_sub_(updates, adam)
        return updates
    return [u * (1 - blend) - a * f for u, a, f in zip(updates, adam, factors.unbind())]


def tensor_features(graph: NeuralGraph, params: Sequence[Tensor], grads: Sequence[Tensor],
                    progress: tuple[int, int | None] | None = None, fan_in_ref: int = 144) -> Tensor:
    """What a rule's scale module reads of each tensor (``[T, TENSOR_FEATURE_SIZE]``, float32,
    no gradient): ``log(fan_in / fan_in_ref) / 4`` (0 if unknown), whether it is a weight
    (2-D or more), its place in the parameter order (0 first, 1 last), ``log`` of its size and
    of the model's over 10, the training progress ``t / T`` (0 without ``T``), whether ``T`` is
    known, ``log(1 + t) / 10``, and the ``log`` of the RMS of its parameters and of its
    gradient over 10."""
    step, total = progress if progress is not None else (0, None)
    moving = [step / total if total else 0.0, float(total is not None), math.log1p(step) / 10]
    rows = [[*fixed, *moving] for fixed in _layout_features(graph.shapes, fan_in_ref)]
    device = params[0].device if params else graph.device

    def rms(t: Tensor) -> Tensor:
        return torch.linalg.vector_norm(t.detach(), dtype=torch.float32) / math.sqrt(max(1, t.numel()))

    with torch.no_grad():
        stats = [torch.stack([rms(p), rms(g)]) for p, g in zip(params, grads)]
        stats = torch.stack(stats) if stats else torch.zeros(0, 2, device=device)
        return torch.cat([torch.tensor(rows, dtype=torch.float32, device=device).view(-1, 8),
                          stats.clamp_min(1e-12).log() / 10], dim=1)


@lru_cache(maxsize=256)
def _layout_features(shapes: tuple[tuple[int, ...], ...], fan_in_ref: int) -> tuple[tuple[float, ...], ...]:
    """The first five columns of :func:`tensor_features`, which depend on the layout only."""
    last, total = max(1, len(shapes) - 1), max(1, sum(math.prod(s) for s in shapes))
    return tuple((math.log(f / fan_in_ref) / 4 if f else 0.0, float(len(shape) >= 2), i / last,
                  math.log(max(1, math.prod(shape))) / 10, math.log(total) / 10)
                 for i, (shape, f) in enumerate(zip(shapes, fan_in(shapes))))


def fan_in(shapes: Sequence[tuple[int, ...]]) -> tuple[int | None, ...]:
    """The fan-in of each tensor of a layout: in-features × kernel positions of a weight
    (``[out, in, *kernel]``); a 1-D tensor takes the fan-in of the weight before it when it
    is that weight's size (its bias or norm), else ``None`` (unknown)."""
    out: list[int | None] = []
    last_out, last_fan = None, None
    for shape in shapes:
        if len(shape) >= 2:
            last_out, last_fan = shape[0], math.prod(shape[1:])
            out.append(last_fan)
        else:
            out.append(last_fan if len(shape) == 1 and shape[0] == last_out else None)
    return tuple(out)


@lru_cache(maxsize=256)
def fan_in_factors(shapes: tuple[tuple[int, ...], ...], power: float, ref: int) -> tuple[float, ...]:
    """``(ref / fan_in) ** power`` per tensor (1 where the fan-in is unknown or ``power`` is 0)."""
    if power == 0:
        return (1.0,) * len(shapes)
    return tuple(1.0 if f is None or f < 1 else (ref / f) ** power for f in fan_in(shapes))


def depth(shapes: Sequence[tuple[int, ...]]) -> int:
    """A layout's depth: its number of weight tensors (2-D or more), at least 1."""
    return max(1, sum(len(shape) >= 2 for shape in shapes))


@lru_cache(maxsize=256)
def step_factors(shapes: tuple[tuple[int, ...], ...], fan_in_power: float, fan_in_ref: int, depth_power: float,
                 depth_ref: int) -> tuple[float, ...]:
    """Each tensor's structural step factor: its fan-in factor (:func:`fan_in_factors`) times
    ``min(1, (depth_ref / depth) ** depth_power)``, the same for every tensor of the model: deeper
    models than ``depth_ref`` take smaller steps, shallower ones the rule's own (on FashionMNIST
    CNNs the shallower ones gained nothing from larger steps, ``docs/NEXT_RULE.md``)."""
    factor = min(1.0, (depth_ref / depth(shapes)) ** depth_power) if depth_power else 1.0
    return tuple(f * factor for f in fan_in_factors(shapes, fan_in_power, fan_in_ref))


def anneal_factor(step: int, total_steps: int | None, fraction: float) -> float:
    """The update's multiplier at ``step`` (steps taken so far) of a run of ``total_steps``: 1,
    then a linear decay to 0 over the last ``fraction`` of the run, 0 after it; always 1 when
    the length is unknown (``None``)."""
    if total_steps is None:
        return 1.0
    return min(1.0, max(0.0, (total_steps - step) / (fraction * total_steps)))
