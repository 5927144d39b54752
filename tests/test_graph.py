"""The neural graph on literal models (SPEC section 3)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from conftest import task17_cnn
from gnnopt import GNNOptimizer
from gnnopt.features import BETAS, element_features
from gnnopt.graph import build_neural_graph, infer_kinds
from gnnopt.rules import create

CIFAR_WIDTHS = {8: (8, 16, 16), 16: (16, 32, 32), 32: (32, 64, 64), 64: (64, 128, 128), 128: (128, 256, 256)}
CIFAR_DEPTHS = {1: (32,), 2: (32, 64), 3: (32, 64, 64), 4: (32, 64, 64, 128), 5: (32, 64, 64, 128, 128)}


def _graph(model):
    named = list(model.named_parameters())
    return build_neural_graph([n for n, _ in named], [p.shape for _, p in named])


def test_task17_counts():
    model = task17_cnn()
    assert sum(p.numel() for p in model.parameters()) == 14_378
    g = _graph(model)
    assert g.num_nodes == 91  # 1 input channel + 16 + 32 + 32 + 10
    assert g.num_edges == 1_872 and g.edge_index.shape == (2, 3_744)
    assert g.fallback == ()
    # reverse edges mirror the forward ones
    assert torch.equal(g.edge_index[:, 1_872:], g.edge_index[:, :1_872].flip(0))
    # no dense N x N anywhere: the largest index tensor is per element
    assert g.readout_index.numel() == 14_378


def test_edges_carry_their_kernel_centred():
    model = task17_cnn()
    g = _graph(model)
    params = list(model.parameters())
    feats = element_features(*[torch.cat([p.detach().reshape(-1) for p in params])] * 2,
                             torch.zeros(len(BETAS), g.num_elements))
    edges = g.edge_features(feats).view(g.num_edges, 25, -1)
    w = params[2]  # conv 16 -> 32, weight[o, j] is edge 16 + o * 16 + j
    o, j = 5, 7
    edge = 16 + o * 16 + j
    expected = element_features(w[o, j].reshape(-1), w[o, j].reshape(-1), torch.zeros(len(BETAS), 9))
    grid = torch.zeros(5, 5, dtype=torch.bool)
    grid[1:4, 1:4] = True
    torch.testing.assert_close(edges[edge][grid.reshape(-1)], expected)
    assert torch.count_nonzero(edges[edge][~grid.reshape(-1)]) == 0
    # a linear edge uses the centre position only
    lin_edge = 1_872 - 1
    assert torch.count_nonzero(edges[lin_edge].sum(1)) <= 1 and torch.count_nonzero(edges[lin_edge][12]) > 0


def test_bias_perturbation_changes_only_its_own_node():
    model = task17_cnn()
    g = _graph(model)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    grad = torch.randn_like(theta) * 1e-3
    mom = torch.zeros(len(BETAS), g.num_elements)
    base = g.node_features(element_features(theta, grad, mom))
    # bias of the second conv (16 -> 32): parameter 3, its neuron k is node 1 + 16 + k
    offset = sum(p.numel() for p in list(model.parameters())[:3])
    k = 11
    grad2 = grad.clone()
    grad2[offset + k] += 0.5
    changed = (g.node_features(element_features(theta, grad2, mom)) != base).any(dim=1).nonzero().flatten()
    assert changed.tolist() == [1 + 16 + k]
    assert g.readout_index[offset + k] == g.num_edges + 1 + 16 + k
    # and no edge feature moved
    torch.testing.assert_close(g.edge_features(element_features(theta, grad2, mom)),
                               g.edge_features(element_features(theta, grad, mom)))


def test_graph_is_cached_per_layout():
    assert _graph(task17_cnn()) is _graph(task17_cnn())
    assert _graph(task17_cnn()) is not _graph(task17_cnn(widths=(8, 16, 16)))


def test_norm_params_attach_and_others_fall_back():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))
    named = list(model.named_parameters())
    kinds = infer_kinds(model)
    g = build_neural_graph([n for n, _ in named], [p.shape for _, p in named], [kinds[n] for n, _ in named])
    assert g.num_nodes == 3 + 8 + 4 and g.fallback == ()
    bn_weight_offset = 8 * 3 * 9
    assert g.readout_index[bn_weight_offset] == g.num_edges + 3  # first conv neuron

    emb = nn.Embedding(10, 4)
    g2 = build_neural_graph(["emb.weight", "pos"], [emb.weight.shape, (1, 5, 4)], ["other", None])
    assert g2.fallback == ("emb.weight", "pos") and g2.num_nodes == 0
    assert (g2.readout_index == 0).all()  # the zero row


@pytest.mark.parametrize("rule_name", ["ff", "lstm", "pna", "rt", "pna_lstm"])
def test_rule_built_for_task17_runs_on_cifar_layouts(rule_name):
    torch.manual_seed(0)
    rule = create(rule_name)
    GNNOptimizer(task17_cnn().named_parameters(), rule)  # the layout it was "trained" on
    widths = list(CIFAR_WIDTHS.values()) + list(CIFAR_DEPTHS.values())
    if rule_name in ("ff", "lstm"):  # layout-free rules: the extremes are enough
        widths = [CIFAR_WIDTHS[8], CIFAR_WIDTHS[128], CIFAR_DEPTHS[1], CIFAR_DEPTHS[5]]
    for w in widths:
        model = task17_cnn(3, w)
        opt = GNNOptimizer(model.named_parameters(), rule)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
        assert all(moved), f"widths {w}: some parameter was not updated"
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert opt.graph.num_nodes == (3 + sum(w) + 10 if rule.reads_graph else 0)


def test_graph_is_freed_with_its_optimizer():
    """Issue "Cost that scales", criterion 5: the graph, its device copy and the kept context
    (graph every K) go with the last optimizer that holds them."""
    import gc
    import weakref

    model = task17_cnn()
    rule = create("pna", hidden=8, layers=1)
    opt = GNNOptimizer(model, rule, graph_every=2)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # makes the device copy too (the graph itself when it is already there)
    graph, device_graph = weakref.ref(opt.graph), weakref.ref(opt._device_graph)
    context = weakref.ref(opt.state["graph_context"])
    twin = GNNOptimizer(task17_cnn(), rule)
    assert twin.graph is opt.graph  # shared while both live
    del opt
    gc.collect()
    assert graph() is not None  # the twin still holds it
    assert context() is None  # the context was the optimizer's own
    del twin
    gc.collect()
    assert graph() is None and device_graph() is None


class _RecurrentNet(nn.Module):
    """A projection whose width is the recurrent layer's 4 (LSTM) or 3 (GRU) gates: its
    biases ``bias_ih_l0`` once joined the projection's nodes by size."""

    def __init__(self, cell, gates):
        super().__init__()
        self.proj = nn.Linear(8, 16 * gates)
        self.rnn = cell(16 * gates, 16, batch_first=True)
        self.head = nn.Linear(16, 4)


class _OutOfOrder(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 3)  # declared first, applied last
        self.body = nn.Linear(8, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


_UNMODELLED = {
    "lstm": (lambda: _RecurrentNet(nn.LSTM, 4), {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"}),
    "gru": (lambda: _RecurrentNet(nn.GRU, 3), {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"}),
    "conv_transpose": (lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.ConvTranspose2d(8, 4, 3), nn.Conv2d(4, 2, 3)),
                       {"1.weight", "1.bias"}),
    "depthwise": (lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8),
                                        nn.Conv2d(8, 16, 1), nn.Flatten(), nn.Linear(16, 3)), {"1.weight", "1.bias"}),
    "grouped": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3, groups=4), nn.Conv2d(16, 4, 1)),
                {"1.weight", "1.bias"}),
    "out_of_order": (_OutOfOrder, set()),
    "cnn_with_norms": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, bias=False),
                                             nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8, 6), nn.LayerNorm(6),
                                             nn.Linear(6, 2)), set()),
}


@pytest.mark.parametrize("case", list(_UNMODELLED))
def test_module_and_named_parameters_give_the_same_graph(case):
    build, unmodelled = _UNMODELLED[case]
    model = build()
    with warnings.catch_warnings(record=True) as from_module:
        warnings.simplefilter("always")
        exact = GNNOptimizer(model, create("pna")).graph
    with warnings.catch_warnings(record=True) as from_names:
        warnings.simplefilter("always")
        inferred = GNNOptimizer(model.named_parameters(), create("pna")).graph
    assert inferred.fallback == exact.fallback and set(exact.fallback) == unmodelled
    assert (inferred.num_nodes, inferred.num_edges) == (exact.num_nodes, exact.num_edges)
    assert torch.equal(inferred.readout_index, exact.readout_index)
    assert torch.equal(inferred.edge_index, exact.edge_index)
    for caught in (from_module, from_names):  # the optimizer names what it left to the head
        messages = " ".join(str(w.message) for w in caught)
        assert all(name in messages for name in unmodelled)
        if case == "out_of_order":
            assert "body.weight" in messages and "declared before" in messages
        elif not unmodelled:
            assert not caught


def test_infer_kinds_marks_layers_the_graph_does_not_model():
    kinds = infer_kinds(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ConvTranspose2d(4, 4, 3), nn.Conv2d(4, 4, 3)))
    assert kinds["0.weight"] == kinds["1.weight"] == kinds["1.bias"] == "other"
    assert kinds["2.weight"] == kinds["2.bias"] == "layer"


def test_rules_that_read_no_graph_get_only_the_layout():
    model = task17_cnn()
    full = GNNOptimizer(model, create("pna", hidden=8, layers=1)).graph
    for name in ("ff", "lstm"):
        graph = GNNOptimizer(model, create(name)).graph
        assert graph.num_nodes == graph.num_edges == 0 and graph.edge_index.numel() == 0
        assert graph.names == full.names and graph.shapes == full.shapes
        assert torch.equal(graph.tensor_index, full.tensor_index)
