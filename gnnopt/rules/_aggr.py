"""PNA's aggregation (mean/min/max/std x identity/amplification) in a few fused ops.

torch_geometric's ``DegreeScalerAggregation`` over ``MeanAggregation``,
``MinAggregation``, ``MaxAggregation`` and ``StdAggregation`` recounts every node's
degree in each aggregator, takes two scattered means for the variance, and reduces min and
max with ``scatter_reduce``, whose generic backward is slow on CPU. On a task-17 graph
that is about 40 small ops per layer forward, each costing more in dispatch than in
arithmetic. :func:`pna_aggregate` computes the same function (empty neighbourhoods give 0,
ties of min/max split the gradient evenly, std is ``sqrt(max(var, 1e-5))`` zeroed where it
is ``sqrt(1e-5)``) with the degree counted once per graph, one scattered sum per moment,
and min and max in one autograd node whose backward is two gathers and multiplies.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


class _ScatterMinMax(torch.autograd.Function):
    """``(min_j x_j, max_j x_j)`` over each node's messages (0 where there are none)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, dim_size: int) -> tuple[Tensor, Tensor]:
        expanded = index.unsqueeze(1).expand_as(x)
        zeros = x.new_zeros(dim_size, x.shape[1])
        low = zeros.scatter_reduce(0, expanded, x, "amin", include_self=False)
        high = zeros.scatter_reduce(0, expanded, x, "amax", include_self=False)
        if ctx.needs_input_grad[0]:
            # which messages attained each extremum, as masks in x's dtype (multiplying by
            # a bool tensor is ~10x slower on CPU), and how many tied for it
            low_hit = (x == low.index_select(0, index)).to(x.dtype)
            high_hit = (x == high.index_select(0, index)).to(x.dtype)
            low_ties = torch.zeros_like(low).index_add_(0, index, low_hit)
            high_ties = torch.zeros_like(high).index_add_(0, index, high_hit)
            ctx.save_for_backward(index, low_hit, high_hit, low_ties, high_ties)
        return low, high

    @staticmethod
    def backward(ctx, grad_low: Tensor, grad_high: Tensor):
        index, low_hit, high_hit, low_ties, high_ties = ctx.saved_tensors
        grad = (grad_low / low_ties.clamp_min(1.0)).index_select(0, index).mul_(low_hit)
        grad.addcmul_((grad_high / high_ties.clamp_min(1.0)).index_select(0, index), high_hit)
        return grad, None, None


def pna_aggregate(x: Tensor, index: Tensor, degree: Tensor, avg_deg_log: Tensor) -> Tensor:
    """torch_geometric's ``DegreeScalerAggregation(["mean", "min", "max", "std"],
    ["identity", "amplification"])``, the same function up to the order of float sums.

    Shapes:
        x: ``[M, H]`` messages; index: ``[M]`` their target nodes; degree: ``[N]`` messages
        per node (``bincount(index)``); avg_deg_log: ``[1]`` -> ``[N, 8H]`` laid out
        ``[mean | min | max | std | the same four amplified]``.
    """
    total = x.new_zeros(degree.shape[0], x.shape[1]).index_add_(0, index, x)
    total_sq = x.new_zeros(degree.shape[0], x.shape[1]).index_add_(0, index, x * x)
    low, high = _ScatterMinMax.apply(x, index, degree.shape[0])
    return pna_from_moments(total, total_sq, low, high, degree, avg_deg_log)


def pna_from_moments(total: Tensor, total_sq: Tensor, low: Tensor, high: Tensor, degree: Tensor,
                     avg_deg_log: Tensor) -> Tensor:
    """:func:`pna_aggregate` from each node's sum, sum of squares, min and max of its messages
    (0 where it has none).

    Shapes: total, total_sq, low, high: ``[N, H]``; degree: ``[N]`` -> ``[N, 8H]``.
    """
    count = degree.clamp_min(1).to(total.dtype).unsqueeze(1)
    mean, mean_sq = total / count, total_sq / count
    std = (mean_sq - mean * mean).clamp(min=1e-5).sqrt()
    std = std.masked_fill(std <= math.sqrt(1e-5), 0.0)
    out = torch.cat([mean, low, high, std], dim=1)
    amplification = torch.log(degree.to(total.dtype) + 1).unsqueeze(1) / avg_deg_log
    return torch.cat([out, out * amplification], dim=1)
