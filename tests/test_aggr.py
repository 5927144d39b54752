"""The lean min/max aggregations equal torch_geometric's, values and gradients."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import aggr as pyg

from gnnopt.rules._aggr import MaxAggregation, MinAggregation


@pytest.mark.parametrize("ours,theirs", [(MaxAggregation, pyg.MaxAggregation), (MinAggregation, pyg.MinAggregation)])
def test_same_values_and_gradients_as_torch_geometric(ours, theirs):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    x[3] = x[4]  # a tie: the gradient is split evenly, as in torch
    index = torch.randint(0, 9, (40,), generator=g)
    index[index == 7] = 8  # node 7 gets no message: 0
    weight = torch.randn(10, 6, generator=g)
    results = []
    for module in (ours(), theirs()):
        leaf = x.clone().requires_grad_()
        out = module(leaf, index, dim_size=10)
        (out * weight).sum().backward()
        results.append((out.detach(), leaf.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert torch.count_nonzero(results[0][0][7]) == 0
