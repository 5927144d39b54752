"""CUDA: a step runs with every tensor on the device (skipped without CUDA)."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from conftest import task17_cnn
from gnnopt import GNNOptimizer
from gnnopt.rules import create, list_rules

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("rule_name", list_rules())
def test_step_on_cuda(rule_name):
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = task17_cnn().to(device)
    opt = GNNOptimizer(model.named_parameters(), create(rule_name))  # rule starts on the CPU
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert all(p.device.type == "cuda" for p in opt.rule.parameters())
    assert opt._device_graph.edge_index.device.type == "cuda"
    for p, b in zip(model.parameters(), before):
        assert opt.state[p]["momenta"].device.type == "cuda" and not torch.equal(p, b)
    if opt.rule.stateful:
        assert all(t.device.type == "cuda" for t in opt.state["rule_state"].values())
