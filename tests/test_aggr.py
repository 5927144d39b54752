"""The fused PNA aggregation equals torch_geometric's DegreeScalerAggregation, values and gradients."""
from __future__ import annotations

import torch
from torch_geometric.nn import aggr as pyg

from gnnopt.rules._aggr import pna_aggregate
from gnnopt.rules.pna import AGGREGATORS, SCALERS, PNALayer


def _reference_and_fused(x: torch.Tensor, index: torch.Tensor, nodes: int, weight: torch.Tensor):
    deg = torch.zeros(41, dtype=torch.long)
    deg[40] = 1
    reference = pyg.DegreeScalerAggregation(AGGREGATORS, SCALERS, deg=deg).double()
    results = []
    for fn in (lambda v: reference(v, index, dim_size=nodes),
               lambda v: pna_aggregate(v, index, torch.bincount(index, minlength=nodes), reference.avg_deg_log)):
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        (out * weight).sum().backward()
        results.append((out.detach(), leaf.grad))
    return results


def test_same_values_and_gradients_as_torch_geometric():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    x[3] = x[4]  # a tie for min and max: the gradient is split evenly, as in torch
    index = torch.randint(0, 9, (40,), generator=g)
    index[index == 7] = 8  # node 7 gets no message: every aggregate is 0
    index[index == 2] = 5
    index[0] = 2  # node 2 gets one message: its std is 0 (sqrt(1e-5) zeroed)
    weight = torch.randn(10, 48, generator=g, dtype=torch.float64)
    (ours, ours_grad), (theirs, theirs_grad) = _reference_and_fused(x, index, 10, weight)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)
    assert torch.count_nonzero(ours[7]) == 0
    assert torch.count_nonzero(ours[2, 18:24]) == 0  # std block of node 2


def test_constant_messages_tie_everywhere():
    x = torch.ones(12, 3, dtype=torch.float64)  # every message ties for min and max
    index = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    weight = torch.randn(4, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ours, ours_grad), (theirs, theirs_grad) = _reference_and_fused(x, index, 4, weight)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)


def test_layer_uses_its_module_buffer():
    layer = PNALayer(8, reference_degree=12)
    index = torch.tensor([0, 1, 1, 2])
    x = torch.randn(4, 8)
    fused = layer.aggregate(x, index, dim_size=3, degree=torch.bincount(index, minlength=3))
    torch.testing.assert_close(fused, layer.aggr_module(x, index, dim_size=3))
    torch.testing.assert_close(layer.aggregate(x, index, dim_size=3), fused)
