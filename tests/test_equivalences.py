"""The fast paths compute the same function as the plain formulas they replace.

Each comparison runs in float64, so that only a change of the math (not of rounding) can
fail it, and with tiny chunk sizes, so that the chunked code paths run on small graphs.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import task17_cnn
from gnnopt import GNNOptimizer, features
from gnnopt.features import BETAS, FEATURE_SIZE, element_features, preprocess
from gnnopt.graph import build_neural_graph
from gnnopt.rules import Head, create
from gnnopt.rules.pna import PNALayer
from gnnopt.rules.rt import RelationalAttention

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _graph(model):
    named = list(model.named_parameters())
    return build_neural_graph([n for n, _ in named], [p.shape for _, p in named])


def _mixed_kernels():
    """5x5, 3x3 and 1x1 convs, then linears: every kind of kernel placement."""
    return nn.Sequential(nn.Conv2d(2, 3, 5), nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 1), nn.Flatten(),
                         nn.Linear(5, 6), nn.Linear(6, 3))


def _feats(graph, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(graph.num_elements, FEATURE_SIZE, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("chunk_elements", [65536, 5])
@pytest.mark.parametrize("model", [_mixed_kernels(), task17_cnn()], ids=["mixed", "task17"])
def test_edge_linear_matches_linear_of_padded_table(monkeypatch, model, chunk_elements):
    monkeypatch.setattr(type(_graph(model)), "chunk_elements", chunk_elements)
    graph = _graph(model)
    feats = _feats(graph)
    weight = torch.randn(7, graph.kernel_positions * FEATURE_SIZE, dtype=torch.float64)
    bias = torch.randn(7, dtype=torch.float64)
    expected = F.linear(graph.edge_features(feats), weight, bias)
    torch.testing.assert_close(graph.edge_linear(feats, weight, bias), expected, **TOL)
    with torch.no_grad():  # the optimizer's step: blocks written into one table
        torch.testing.assert_close(graph.edge_linear(feats, weight, bias), expected, **TOL)
        torch.testing.assert_close(graph.edge_linear(feats, weight), F.linear(graph.edge_features(feats), weight),
                                   **TOL)
        out = feats.new_full((graph.num_edges, 7), float("nan"))
        assert graph.edge_linear(feats, weight, bias, out=out) is out
        torch.testing.assert_close(out, expected, **TOL)


def test_graph_without_layers_has_empty_edge_tables():
    graph = build_neural_graph(["emb.weight"], [(10, 4)], ["other"])
    feats = _feats(graph)
    assert graph.edge_features(feats).shape == (0, graph.kernel_positions * FEATURE_SIZE)
    assert graph.edge_linear(feats, torch.zeros(3, graph.kernel_positions * FEATURE_SIZE)).shape == (0, 3)


@pytest.mark.parametrize("embed_dim", [5, 20], ids=["keeps-table", "projects"])
@pytest.mark.parametrize("with_index", [True, False])
def test_head_projects_before_gathering_and_chunks(monkeypatch, with_index, embed_dim):
    torch.manual_seed(0)
    head = Head(embed_dim, 16, 3).double()
    # an embedding narrower than the head is kept as it is (smaller), a wider one projected
    assert head.keeps_table == (embed_dim < 16)
    feats = torch.randn(50, FEATURE_SIZE, dtype=torch.float64)
    table = torch.randn(9, embed_dim, dtype=torch.float64)
    assert head.project(table).shape == (9, min(embed_dim, 16))
    index = torch.randint(0, 9, (50,))
    embedding = table[index]
    expected = head.net(torch.cat([embedding, feats], dim=1))
    expected_grads = torch.autograd.grad(expected.square().sum(), list(head.parameters()))
    monkeypatch.setattr(Head, "chunk_size", 7)
    out = head(feats, table, index) if with_index else head(feats, embedding)
    torch.testing.assert_close(out, expected, **TOL)
    grads = torch.autograd.grad(out.square().sum(), list(head.parameters()))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **TOL)
    ff_head = Head(0, 16, 2).double()
    torch.testing.assert_close(ff_head(feats), ff_head.net(feats), **TOL)


def test_head_projects_a_table_of_its_width_in_place(monkeypatch):
    """An optimizer step may project a table that the rule owns over itself, chunk by chunk."""
    torch.manual_seed(0)
    head = Head(16, 16, 2).double()
    table = torch.randn(30, 16, dtype=torch.float64)
    expected = head.project(table)
    monkeypatch.setattr(Head, "chunk_size", 7)
    with torch.no_grad():
        got = head.project(table, in_place=True)
    assert got.data_ptr() == table.data_ptr()
    torch.testing.assert_close(got, expected, **TOL)


def _reference_pna_layer(layer, x, edge_attr, edge_index):
    """The layer written plainly: gather, repeat, then PyG's aggregation."""
    src, dst = edge_index
    num_edges = edge_attr.shape[0]
    hidden = layer.act(layer.msg_target(x)[dst] + layer.msg_source(x)[src])
    scale, shift = layer.film(edge_attr).repeat(2, 1).chunk(2, dim=1)
    messages = scale * layer.msg_out(hidden) + shift
    aggregated = layer.aggr_module(messages, dst, dim_size=x.shape[0], dim=0)
    x = layer.node_norm(x + layer.node_update(torch.cat([x, aggregated], dim=1)))
    update = layer.edge_source(x)[src[:num_edges]] + layer.edge_self(edge_attr) + layer.edge_target(x)[dst[:num_edges]]
    return x, layer.edge_norm(edge_attr + layer.edge_out(layer.act(update)))


@pytest.mark.parametrize("chunk_size", [8192, 7])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("bare_edge_index", [False, True])
@pytest.mark.parametrize("widths", [(None, None), (3, 5)], ids=["paper", "lean"])
def test_pna_layer_matches_plain_formula(monkeypatch, chunk_size, grad, bare_edge_index, widths):
    torch.manual_seed(0)
    graph = _graph(_mixed_kernels())
    layer = PNALayer(8, 4, *widths).double()
    x = torch.randn(graph.num_nodes, 8, dtype=torch.float64)
    edge_attr = torch.randn(graph.num_edges, widths[0] or 8, dtype=torch.float64)
    expected = _reference_pna_layer(layer, x, edge_attr, graph.edge_index)
    expected_grads = torch.autograd.grad(sum(t.square().sum() for t in expected), list(layer.parameters()))
    monkeypatch.setattr(PNALayer, "chunk_size", chunk_size)
    monkeypatch.setattr(PNALayer, "block_chunk_size", chunk_size)
    with torch.set_grad_enabled(grad):
        out = layer(x, edge_attr, graph.edge_index if bare_edge_index else graph)
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, **TOL)
    if not grad and not bare_edge_index:  # an optimizer step may overwrite the old edges
        copy = edge_attr.clone()
        with torch.no_grad():
            x_new, edges_new = layer(x, copy, graph, in_place=True)
        torch.testing.assert_close(edges_new, expected[1], **TOL)
        torch.testing.assert_close(x_new, expected[0], **TOL)
        assert edges_new.data_ptr() == copy.data_ptr()  # written over the old table
    if grad:  # meta-training: the same gradient in every rule weight
        grads = torch.autograd.grad(sum(t.square().sum() for t in out), list(layer.parameters()))
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("chunk_size", [65536, 7])
@pytest.mark.parametrize("edge_hidden", [None, 3], ids=["paper", "lean"])
def test_rt_layer_on_blocks_matches_the_edge_list(monkeypatch, chunk_size, edge_hidden):
    """An optimizer step's attention, merged from partial softmaxes over chunks of layer blocks,
    is the per-edge softmax of meta-training."""
    torch.manual_seed(0)
    graph = _graph(_mixed_kernels())
    layer = RelationalAttention(8, 2, edge_hidden).double()
    x = torch.randn(graph.num_nodes, 8, dtype=torch.float64)
    edge_attr = torch.randn(graph.num_edges, edge_hidden or 8, dtype=torch.float64)
    expected = layer(x, edge_attr, graph.edge_index)
    monkeypatch.setattr(RelationalAttention, "block_chunk_size", chunk_size)
    with torch.no_grad():
        copy = edge_attr.clone()
        x_new, edges_new = layer(x, copy, graph, in_place=True)
    torch.testing.assert_close(x_new, expected[0], **TOL)
    torch.testing.assert_close(edges_new, expected[1], **TOL)
    assert edges_new.data_ptr() == copy.data_ptr()  # written over the old table


def test_element_features_chunks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    theta, grad = torch.randn(23, generator=g), torch.randn(23, generator=g) * 1e-5
    momenta = torch.randn(len(BETAS), 23, generator=g)
    theta[3] = 0.0
    expected = preprocess(torch.cat([theta.unsqueeze(0), grad.unsqueeze(0), momenta]).t())
    monkeypatch.setattr(features, "_CHUNK", 5)
    assert torch.equal(element_features(theta, grad, momenta), expected)
    with torch.no_grad():  # the optimizer's step: chunks written into one table
        assert torch.equal(element_features(theta, grad, momenta), expected)
    assert element_features(theta[:0], grad[:0], momenta[:, :0]).shape == (0, FEATURE_SIZE)


def test_lazy_features_read_rows_across_parameters(monkeypatch):
    """Rows of the joined table, read from each parameter's own tensors: slices that span
    several parameters (an empty one among them) and index tensors in any order."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (0,), (5,), (2, 2, 2)]
    thetas = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    momenta = [torch.randn(len(BETAS), *s, generator=g) for s in shapes]
    monkeypatch.setattr(features, "_CHUNK", 3)
    expected = element_features(torch.cat([t.reshape(-1).float() for t in thetas]),
                                torch.cat([t.reshape(-1) for t in grads]),
                                torch.cat([m.reshape(len(BETAS), -1) for m in momenta], dim=1))
    lazy = features.LazyFeatures(thetas, grads, momenta)
    assert lazy.shape == expected.shape and lazy.dtype == torch.float32
    for rows in (slice(0, 25), slice(2, 14), slice(12, 17), slice(16, 17), slice(20, 40), slice(25, 25)):
        assert torch.equal(lazy[rows], expected[rows])
    index = torch.tensor([24, 0, 13, 12, 7, 17, 3])
    assert torch.equal(lazy[index], expected[index])


@pytest.mark.parametrize("rule_name", ["pna", "rt", "pna_lstm"])
def test_graph_rules_step_a_model_without_layers(rule_name):
    model = nn.Embedding(10, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning
        opt = GNNOptimizer(model, create(rule_name))
    model.weight.grad = torch.randn_like(model.weight)
    before = model.weight.detach().clone()
    opt.step()
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)


@pytest.mark.parametrize("rule_name, config", [
    ("pna", {"fan_in_power": 0.5}), ("ff", {}), ("lstm", {}), ("rt", {}), ("pna_lstm", {}),
    ("rt", {"edge_hidden": 4}), ("pna_lstm", {"hidden": 16, "edge_hidden": 4, "message_hidden": 6, "head_hidden": 8}),
], ids=["pna", "ff", "lstm", "rt", "pna_lstm", "rt-lean", "pna_lstm-lean"])
def test_lean_step_matches_the_tracked_update(monkeypatch, rule_name, config):
    """Without autograd (an optimizer step) the update is computed in place, momenta go
    straight into one table and a row-reading rule never gets the whole feature table; it is
    the same update and the same momenta as with autograd on."""
    from gnnopt.functional import init_momenta, learned_update

    torch.manual_seed(0)
    model = _mixed_kernels()
    named = list(model.named_parameters())
    rule = create(rule_name, **config)
    graph = build_neural_graph([n for n, _ in named], [p.shape for _, p in named])
    params = [p.detach() for _, p in named]
    grads = [torch.randn_like(p) for p in params]
    momenta = [init_momenta(p).normal_() for p in params]
    monkeypatch.setattr(features, "_CHUNK", 7)
    monkeypatch.setattr(Head, "chunk_size", 11)
    monkeypatch.setattr(type(graph), "chunk_elements", 5)
    monkeypatch.setattr(PNALayer, "block_chunk_size", 7)
    monkeypatch.setattr(RelationalAttention, "block_chunk_size", 7)
    seen = []
    real_readout = type(rule).readout
    monkeypatch.setattr(type(rule), "readout", lambda self, feats, *a: seen.append(type(feats).__name__)
                        or real_readout(self, feats, *a))
    with torch.enable_grad():  # the rule's weights require grad: the tracked path
        tracked = learned_update(rule, graph, params, grads, momenta)
    with torch.no_grad():
        lean = learned_update(rule, graph, params, grads, momenta)
    assert seen == ["Tensor", "LazyFeatures" if rule.reads_features_by_rows else "Tensor"]
    for a, b in zip(lean.updates + lean.momenta, tracked.updates + tracked.momenta):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-9)
    owned = [m.clone() for m in momenta]  # the optimizer's own momenta, advanced where they are
    with torch.no_grad():
        in_place = learned_update(rule, graph, params, grads, owned, momenta_in_place=True)
    assert all(a is b for a, b in zip(in_place.momenta, owned))
    for a, b in zip(in_place.updates + in_place.momenta, tracked.updates + tracked.momenta):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-9)
