"""Bad input gets a clear error and loses nothing; any model can be optimized."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import make_sign_descent, small_batch, small_cnn
from gnnopt import GNNOptimizer
from gnnopt.rules import create


def test_nonfinite_gradients_never_reach_parameters(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    opt = GNNOptimizer([{"params": named[:2]}, {"params": named[2:]}], create(rule_name))
    x, y = small_batch()
    F.cross_entropy(model(x), y).backward()
    named[0][1].grad[0, 0, 0, 0] = float("nan")
    named[1][1].grad[0] = float("inf")
    before = [p.detach().clone() for _, p in named]
    with pytest.warns(RuntimeWarning, match="non-finite gradient"):
        opt.step()
    after = [p.detach() for _, p in named]
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])  # skipped group
    assert all(not torch.equal(a, b) for a, b in zip(after[2:], before[2:]))  # healthy group stepped
    assert all(torch.isfinite(p).all() for p in after)
    assert all(torch.isfinite(s["momenta"]).all() for k, s in opt.state.items() if isinstance(k, torch.Tensor))
    assert opt.state["nonfinite_skips"] == 1
    assert opt.state_dict()["state"]["nonfinite_skips"] == 1


class ResidualCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.stem(x)))
        x = F.relu(x + self.bn2(self.conv(x)))
        return self.head(x.mean((2, 3)))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=12, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        return self.out(h)


def _train(model, rule, batch, loss_fn, steps=25):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = GNNOptimizer(model, rule)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    first = loss_fn(model, batch).item()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
    last = loss_fn(model, batch).item()
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    return opt, first, last, moved, [w for w in caught if issubclass(w.category, UserWarning)]


def test_residual_cnn_with_batchnorm_trains(rule_name):
    torch.manual_seed(0)
    model = ResidualCNN()
    batch = small_batch(n=32)
    loss_fn = lambda m, b: F.cross_entropy(m(b[0]), b[1])
    opt, first, last, moved, caught = _train(model, make_sign_descent(create(rule_name)), batch, loss_fn)
    assert not opt.graph.fallback and not caught  # convs, norms and head all in the graph
    assert len(moved) == len(list(model.parameters()))
    assert last < first - 0.05


def test_tiny_transformer_trains_with_fallback_warning(rule_name):
    torch.manual_seed(0)
    model = TinyTransformer()
    tokens = torch.randint(0, 12, (8, 6), generator=torch.Generator().manual_seed(1))
    loss_fn = lambda m, t: F.cross_entropy(m(t[:, :-1]).reshape(-1, 12), t[:, 1:].reshape(-1))
    rule = make_sign_descent(create(rule_name))
    opt, first, last, moved, caught = _train(model, rule, tokens, loss_fn)
    if rule.reads_graph:
        assert set(opt.graph.fallback) == {"embed.weight", "attn.in_proj_weight", "attn.in_proj_bias"}
        assert len(caught) == 1 and "embed.weight" in str(caught[0].message)
        assert "attn.in_proj_weight" in str(caught[0].message)
    else:  # ff and lstm treat every parameter alike: nothing falls outside
        assert not opt.graph.fallback and not caught
    assert len(moved) == len(list(model.parameters()))  # fallback parameters are optimized too
    assert last < first - 0.05


def test_strict_names_the_parameters_outside_the_graph():
    with pytest.raises(ValueError, match="embed.weight.*attn.in_proj_weight"):
        GNNOptimizer(TinyTransformer(), create("pna"), strict=True)


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(5, 3, sparse=True)
    with pytest.warns(UserWarning):
        opt = GNNOptimizer(emb, create("pna", hidden=8, layers=1))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("bad", ["nan", "inf", "tensor"])
def test_nonfinite_lr_met_in_step_skips_its_group(rule_name, bad):
    # a fresh tensor each time: schedulers update a tensor lr in place
    bad = torch.tensor(float("nan")) if bad == "tensor" else float(bad)
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    opt = GNNOptimizer([{"params": named[:2]}, {"params": named[2:]}], create(rule_name))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    opt.param_groups[0]["lr"] = bad  # by hand, or by a scheduler gone wrong
    x, y = small_batch()
    F.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for _, p in named]
    with pytest.warns(RuntimeWarning, match="non-finite lr"):
        opt.step()
    sched.step()
    after = [p.detach() for _, p in named]
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert all(not torch.equal(a, b) for a, b in zip(after[2:], before[2:]))
    assert opt.state["nonfinite_skips"] == 1 and opt.state[named[0][1]]["step"] == 0


def test_a_nonfinite_parameter_is_named_and_skipped_alone(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    opt = GNNOptimizer([{"params": named[:2]}, {"params": named[2:]}], create(rule_name))
    for _, p in named:
        p.grad = torch.randn_like(p) * 1e-2
    with torch.no_grad():
        named[1][1][0] = float("nan")  # the first conv's bias, in the first group
    before = [p.detach().clone() for _, p in named]
    with pytest.warns(RuntimeWarning, match=r"parameter\(s\) 0\.bias"):
        opt.step()
    after = [p.detach() for _, p in named]
    assert torch.equal(after[1].nan_to_num(), before[1].nan_to_num())  # untouched, its NaN included
    assert all(not torch.equal(a, b) for i, (a, b) in enumerate(zip(after, before)) if i != 1)
    assert all(torch.isfinite(p).all() for i, p in enumerate(after) if i != 1)
    assert opt.state[named[1][1]]["step"] == 0 and opt.state[named[0][1]]["step"] == 1


@pytest.mark.parametrize("bad", [True, -1.0, "0.1", None])
def test_an_invalid_lr_set_after_construction_changes_nothing(bad):
    """A value construction refuses, set later by hand, is refused by ``step()`` before any
    group is touched (a non-finite one, as a scheduler may produce, skips its group instead)."""
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    opt = GNNOptimizer([{"params": named[:2]}, {"params": named[2:]}], create("ff"))
    x, y = small_batch()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    before = [p.detach().clone() for _, p in named]
    momenta = [opt.state[p]["momenta"].clone() for _, p in named]
    opt.param_groups[1]["lr"] = bad
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.step()
    assert all(torch.equal(b, p) for b, (_, p) in zip(before, named))
    assert all(torch.equal(m, opt.state[p]["momenta"]) for m, (_, p) in zip(momenta, named))
