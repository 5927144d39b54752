"""Min/max aggregations with a lean backward, as torch_geometric ``Aggregation`` modules.

torch_geometric's ``MinAggregation``/``MaxAggregation`` reduce with ``scatter_reduce``,
whose generic backward dominates a PNA layer's training cost on CPU (about three quarters of
the aggregation's forward+backward on the task-17 graph). These compute the same function
(same forward, same gradient, ties splitting it evenly, empty neighbourhoods giving 0) and
keep, from the forward, the mask of the elements that attained each extremum, so the
backward is one gather and one multiply.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.nn.aggr import Aggregation


class _ScatterExtremum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, dim_size: int, reduce: str) -> Tensor:
        expanded = index.view(-1, *([1] * (x.dim() - 1))).expand_as(x)
        out = x.new_zeros((dim_size, *x.shape[1:])).scatter_reduce_(0, expanded, x, reduce, include_self=False)
        if ctx.needs_input_grad[0]:
            # the mask in x's dtype: multiplying by a bool tensor is ~10x slower on CPU
            hit = (x == out.index_select(0, index)).to(x.dtype)
            ties = out.new_zeros(out.shape).index_add_(0, index, hit)
            ctx.save_for_backward(index, hit, ties)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        index, hit, ties = ctx.saved_tensors
        share = grad_out / ties.clamp_min(1.0)
        return share.index_select(0, index) * hit, None, None, None


class _Extremum(Aggregation):
    mode: str  # "amax" or "amin" (torch.scatter_reduce)
    reduce_name: str  # "max" or "min" (torch_geometric's reduce)

    def forward(self, x: Tensor, index: Optional[Tensor] = None, ptr: Optional[Tensor] = None,
                dim_size: Optional[int] = None, dim: int = -2, max_num_elements: Optional[int] = None) -> Tensor:
        if index is None or dim not in (0, -x.dim()):
            return self.reduce(x, index, ptr, dim_size, dim, reduce=self.reduce_name)
        size = int(index.max()) + 1 if dim_size is None else dim_size
        return _ScatterExtremum.apply(x, index, size, self.mode)


class MaxAggregation(_Extremum):
    """``max_j x_j`` over each node's incoming messages (0 where there are none)."""

    mode, reduce_name = "amax", "max"


class MinAggregation(_Extremum):
    """``min_j x_j`` over each node's incoming messages (0 where there are none)."""

    mode, reduce_name = "amin", "min"
