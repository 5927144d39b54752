"""The torch.optim.Optimizer contract, run over every registered rule."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.nn import functional as F

from conftest import make_sign_descent, small_batch, small_cnn
from gnnopt import GNNOptimizer
from gnnopt.functional import NOMINAL_KEY
from gnnopt.rules import create


def _loss(model, seed=0):
    x, y = small_batch(seed)
    return F.cross_entropy(model(x), y)


def _backward(model, opt, seed=0):
    opt.zero_grad()
    loss = _loss(model, seed)
    loss.backward()
    return loss


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_step_with_closure_returns_loss_and_enables_grad(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    opt = GNNOptimizer(model.named_parameters(), create(rule_name))

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = _loss(model)
        loss.backward()
        return loss

    before = _flat(model)
    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)
    assert not torch.equal(before, _flat(model))


def test_zero_grad(rule_name):
    model = small_cnn()
    opt = GNNOptimizer(model, create(rule_name))
    _backward(model, opt)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_sign_descent_head_lowers_the_loss(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    opt = GNNOptimizer(model.named_parameters(), make_sign_descent(create(rule_name)))
    first = _loss(model).item()
    for _ in range(30):
        _backward(model, opt)
        opt.step()
    assert _loss(model).item() < first - 0.05


def test_per_group_lr_and_weight_decay(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    groups = [
        {"params": named[:2], "lr": 0.0, "weight_decay": 0.0},   # frozen by lr = 0
        {"params": named[2:], "lr": 2.0, "weight_decay": 0.1},
    ]
    rule = create(rule_name)
    opt = GNNOptimizer(groups, rule)
    twin = copy.deepcopy(model)
    twin_named = list(twin.named_parameters())
    twin_opt = GNNOptimizer([{"params": twin_named[:2], "lr": 0.0}, {"params": twin_named[2:], "lr": 1.0}], rule)
    before = [p.detach().clone() for p in model.parameters()]
    _backward(model, opt)
    _backward(twin, twin_opt)
    opt.step()
    twin_opt.step()
    params = list(model.parameters())
    assert torch.equal(params[0], before[0]) and torch.equal(params[1], before[1])
    # group 2: theta (1 - lr * wd) + lr * delta, with delta read off the lr = 1, wd = 0 twin
    for p, b, t in zip(params[2:], before[2:], list(twin.parameters())[2:]):
        delta = t.detach() - b
        torch.testing.assert_close(p.detach(), b * (1 - 2.0 * 0.1) + 2.0 * delta, rtol=1e-5, atol=1e-6)


def test_invalid_options_raise():
    model = small_cnn()
    with pytest.raises(ValueError, match="Invalid lr"):
        GNNOptimizer(model, create("ff"), lr=-1.0)
    with pytest.raises(ValueError, match="Invalid weight_decay"):
        GNNOptimizer(model, create("ff"), weight_decay=-0.1)
    with pytest.raises(TypeError, match="UpdateRule"):
        GNNOptimizer(model, torch.optim.Adam)
    with pytest.raises(ValueError, match="Unknown rule"):
        create("nope")
    with pytest.raises(ValueError, match="Unknown option"):
        create("pna", hiden=3)
    with pytest.raises(ValueError, match="Invalid hidden"):
        create("ff", hidden=0)
    with pytest.raises(ValueError, match="Invalid edge_hidden"):
        create("pna", edge_hidden=0)


def test_lean_pna_steps_and_round_trips(tmp_path):
    """Narrow edges, messages and head: a rule of its own weights, trained and loaded alike;
    the paper configuration keeps the weights it always had (no node readout)."""
    assert "node_readout.weight" not in create("pna").state_dict()
    torch.manual_seed(0)
    rule = create("pna", hidden=16, layers=2, edge_hidden=4, message_hidden=6, head_hidden=8)
    assert rule.head.keeps_table and rule.layers[0].edge_norm.normalized_shape == (4,)
    model = small_cnn()
    opt = GNNOptimizer(model, make_sign_descent(rule), graph_every=2)
    x, y = small_batch()
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert opt.state["graph_context"].shape[1] == 4  # the kept context is the 4-wide table
    rule.save_pretrained(tmp_path)
    again = type(rule).from_pretrained(tmp_path)
    assert again.config == rule.config
    for key, value in rule.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_add_param_group_rebuilds_graph(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    opt = GNNOptimizer(named[:4], create(rule_name))
    nodes, elements = opt.graph.num_nodes, opt.graph.num_elements
    _backward(model, opt)
    opt.step()
    opt.add_param_group({"params": named[4:], "lr": 0.5})
    assert opt.graph.num_elements > elements and opt.graph.num_tensors == len(named)
    assert opt.graph.num_nodes > nodes or not opt.rule.reads_graph
    before = named[-1][1].detach().clone()
    _backward(model, opt)
    opt.step()
    assert not torch.equal(before, named[-1][1])


def test_add_param_group_without_names_to_a_named_optimizer_says_how():
    model = small_cnn()
    named = list(model.named_parameters())
    opt = GNNOptimizer(named[:4], create("ff"))
    with pytest.raises(ValueError, match="named_parameters"):
        opt.add_param_group({"params": (p for _, p in named[4:])})
    assert len(opt.param_groups) == 1 and opt.graph.num_tensors == 4
    opt.add_param_group({"params": (item for item in named[4:])})  # a generator of (name, tensor)
    assert opt.graph.num_tensors == len(named)


def test_skips_params_without_grad(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    opt = GNNOptimizer(model.named_parameters(), create(rule_name))
    frozen = params[0].detach().clone()
    _backward(model, opt)
    params[1].grad = None  # grad None: skipped too
    untouched = params[1].detach().clone()
    stepped = params[2].detach().clone()
    opt.step()
    assert torch.equal(params[0], frozen) and torch.equal(params[1], untouched)
    assert torch.count_nonzero(opt.state[params[1]]["momenta"]) == 0
    assert opt.state[params[1]]["step"] == 0 and opt.state[params[2]]["step"] == 1
    assert not torch.equal(params[2], stepped)  # the others still stepped


@pytest.mark.parametrize("form", [{}, {"nominal_blend": 0.5}], ids=["", "nominal"])
def test_state_dict_roundtrip_continues_bit_identically(rule_name, form):
    torch.manual_seed(0)
    model = small_cnn()
    rule = create(rule_name, **form)
    opt = GNNOptimizer(model.named_parameters(), rule)
    for step in range(3):
        _backward(model, opt, seed=step)
        opt.step()
    saved_model = copy.deepcopy(model.state_dict())
    saved = copy.deepcopy(opt.state_dict())
    if rule.stateful or form:
        assert "rule_state" in saved["state"]
    if form:  # the nominal term's second moment is part of the optimizer's state
        assert NOMINAL_KEY in opt.state["rule_state"]
    for step in range(3, 6):
        _backward(model, opt, seed=step)
        opt.step()
    expected = _flat(model)

    restored = small_cnn()
    restored.load_state_dict(saved_model)
    opt2 = GNNOptimizer(restored.named_parameters(), rule)
    reference = copy.deepcopy(saved)
    opt2.load_state_dict(saved)
    assert _same_nested(saved, reference), "load_state_dict mutated its argument"
    for step in range(3, 6):
        _backward(restored, opt2, seed=step)
        opt2.step()
        assert _same_nested(saved, reference), "stepping mutated the loaded state_dict"
    assert torch.equal(_flat(restored), expected)


def test_lr_scheduler_scales_the_update(rule_name):
    torch.manual_seed(0)
    model = small_cnn()
    twin = copy.deepcopy(model)
    rule = create(rule_name)
    opt = GNNOptimizer(model.named_parameters(), rule)
    twin_opt = GNNOptimizer(twin.named_parameters(), rule, lr=0.25)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.25)
    assert opt.param_groups[0]["lr"] == 0.25
    before = _flat(model)
    _backward(model, opt)
    _backward(twin, twin_opt)
    opt.step()
    twin_opt.step()
    sched.step()
    torch.testing.assert_close(_flat(model), _flat(twin))
    assert not torch.equal(before, _flat(model))


def test_plain_tensors_are_accepted():
    model = small_cnn()
    opt = GNNOptimizer(list(model.parameters()), create("pna"))
    assert opt.graph.num_edges > 0 and not opt.graph.fallback
    with pytest.raises(TypeError, match="iterable"):
        GNNOptimizer(next(model.parameters()), create("ff"))
    with pytest.raises(ValueError, match="empty"):
        GNNOptimizer([], create("ff"))


def test_pna_lstm_carries_state_across_steps():
    torch.manual_seed(0)
    model = small_cnn()
    opt = GNNOptimizer(model.named_parameters(), create("pna_lstm"))
    _backward(model, opt)
    opt.step()
    h1 = opt.state["rule_state"]["h"].clone()
    assert h1.abs().sum() > 0
    opt.step()  # same gradient again: a recurrent rule's state still moves
    h2 = opt.state["rule_state"]["h"]
    assert h2.shape == (opt.graph.num_nodes, 64) and not torch.equal(h1, h2)


def _same_nested(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_nested(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_nested(x, y) for x, y in zip(a, b))
    return a == b


def _synthetic_steps(model, opt, steps, start=0):
    """Steps with seeded gradients (no forward pass: half precision convs are slow on CPU)."""
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(p.dtype)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_resume_is_bit_identical_in_every_dtype(rule_name, dtype):
    torch.manual_seed(0)
    model = small_cnn().to(dtype)
    rule = create(rule_name)
    opt = GNNOptimizer(model.named_parameters(), rule)
    _synthetic_steps(model, opt, 3)
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _synthetic_steps(model, opt, 3, start=3)

    restored = small_cnn().to(dtype)
    restored.load_state_dict(saved_model)
    opt2 = GNNOptimizer(restored.named_parameters(), rule)
    opt2.load_state_dict(saved)
    for p in restored.parameters():  # momenta keep their own dtype, not the parameter's
        assert opt2.state[p]["momenta"].dtype == torch.float32
    if rule.stateful:
        assert all(v.dtype == torch.float32 for v in opt2.state["rule_state"].values())
    _synthetic_steps(restored, opt2, 3, start=3)
    assert torch.equal(_flat(restored), _flat(model))


def test_float16_momenta_survive_a_state_dict_past_the_float16_range():
    model = small_cnn().half()
    opt = GNNOptimizer(model.named_parameters(), create("ff"))
    _synthetic_steps(model, opt, 1)
    p = next(model.parameters())
    with torch.no_grad():  # m_0.9999 ~ 1e4 |g|: past 65504 for |g| > 6.5
        opt.state[p]["momenta"][-1].fill_(1e5)
    opt2 = GNNOptimizer(model.named_parameters(), create("ff"))
    opt2.load_state_dict(opt.state_dict())
    assert torch.equal(opt2.state[p]["momenta"], opt.state[p]["momenta"])
    _synthetic_steps(model, opt2, 1, start=1)
    assert torch.isfinite(opt2.state[p]["momenta"]).all() and torch.isfinite(p).all()


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_are_working_optimizers(rule_name, how):
    import pickle

    torch.manual_seed(0)
    model = small_cnn()
    opt = GNNOptimizer(model.named_parameters(), create(rule_name), lr=0.5)
    _synthetic_steps(model, opt, 2)
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert twin.graph.num_nodes == opt.graph.num_nodes and twin.param_groups[0]["lr"] == 0.5
    params, twin_params = opt._all_params(), twin._all_params()
    assert all(t is not p and torch.equal(t, p) for t, p in zip(twin_params, params))
    for p, t in zip(params, twin_params):
        t.grad = p.grad.clone()
    opt.step()
    twin.step()
    assert all(torch.equal(t, p) for t, p in zip(twin_params, params))
    assert all(torch.equal(twin.state[t]["momenta"], opt.state[p]["momenta"]) for t, p in zip(twin_params, params))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, True, "1", torch.tensor(float("nan")),
                                 torch.tensor([1.0, 2.0])])
def test_lr_and_weight_decay_must_be_finite_non_negative_numbers(bad):
    model = small_cnn()
    named = list(model.named_parameters())
    with pytest.raises(ValueError, match="Invalid lr"):
        GNNOptimizer(model, create("ff"), lr=bad)
    with pytest.raises(ValueError, match="Invalid lr"):
        GNNOptimizer([{"params": named[:2], "lr": bad}, {"params": named[2:]}], create("ff"))
    opt = GNNOptimizer(named[:2], create("ff"))
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.add_param_group({"params": named[2:], "lr": bad})
    if not isinstance(bad, torch.Tensor):
        with pytest.raises(ValueError, match="Invalid weight_decay"):
            GNNOptimizer(model, create("ff"), weight_decay=bad)
        with pytest.raises(ValueError, match="Invalid weight_decay"):
            opt.add_param_group({"params": named[2:], "weight_decay": bad})
    assert len(opt.param_groups) == 1
    GNNOptimizer(model, create("ff"), lr=torch.tensor(0.5), weight_decay=0)  # a finite scalar tensor is fine


def test_one_cycle_lr_needs_cycle_momentum_off():
    model = small_cnn()
    opt = GNNOptimizer(model.named_parameters(), create("ff"))
    assert "cycle_momentum=False" in GNNOptimizer.__doc__
    with pytest.raises(ValueError, match="momentum"):
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=4, cycle_momentum=False)
    lrs = []
    for _ in range(4):
        _backward(model, opt)
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert max(lrs) > lrs[0] and all(torch.isfinite(p).all() for p in model.parameters())


def test_graph_every_reuses_the_context_between_graph_steps(rule_name, monkeypatch):
    """With ``graph_every=K`` the rule's graph part runs on steps 0, K, 2K, ... only; the
    steps in between read its context. ``graph_every=1`` is the plain rule."""
    torch.manual_seed(0)
    rule = create(rule_name)
    model = small_cnn()
    opt = GNNOptimizer(model, rule, graph_every=3)
    calls = []
    real = type(rule).embed
    monkeypatch.setattr(type(rule), "embed", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    x, y = small_batch()
    for _ in range(7):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    has_graph = rule_name != "ff"  # ff reads no graph: its (empty) graph part is free, nothing kept
    assert len(calls) == (3 if has_graph else 7)  # steps 0, 3 and 6
    assert opt.state["graph_step"] == 7
    assert ("graph_context" in opt.state) == has_graph


def test_a_graph_step_frees_the_old_context_before_building_the_new_one(monkeypatch):
    """Two contexts are never held at once (each is as large as the graph's edges), and the
    momenta advance in the optimizer's own tensors."""
    import weakref

    torch.manual_seed(0)
    rule = create("pna", hidden=8, layers=1, head_hidden=16)
    model = small_cnn()
    opt = GNNOptimizer(model, rule, graph_every=2)
    alive = []
    real = type(rule).embed
    monkeypatch.setattr(type(rule), "embed", lambda self, *a, **k: alive.append(
        [r() is not None for r in kept]) or real(self, *a, **k))
    kept = []
    x, y = small_batch()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if "graph_context" in opt.state:
            kept.append(weakref.ref(opt.state["graph_context"]))
    assert [len(a) for a in alive] == [0, 2, 4]  # graph steps 0, 2 and 4, after 0, 2 and 4 kept
    assert not any(any(a) for a in alive)  # ... every earlier context already gone
    momenta = {id(opt.state[p]["momenta"]) for p in model.parameters()}
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert {id(opt.state[p]["momenta"]) for p in model.parameters()} == momenta


def test_graph_every_resumes_exactly_and_validates(tmp_path):
    torch.manual_seed(0)
    model = small_cnn()
    x, y = small_batch()

    def run(opt, model, steps):
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    rule = create("pna", hidden=16, layers=2)
    twin = copy.deepcopy(model)
    opt = GNNOptimizer(model, rule, graph_every=4)
    run(opt, model, 6)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    resumed = GNNOptimizer(twin, rule, graph_every=4)
    twin.load_state_dict(model.state_dict())
    resumed.load_state_dict(torch.load(tmp_path / "opt.pt"))
    run(opt, model, 3)  # steps 6, 7 reuse the saved context; step 8 runs the graph
    run(resumed, twin, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="graph_every"):
            GNNOptimizer(small_cnn(), rule, graph_every=bad)


def test_graph_every_one_is_the_plain_step():
    torch.manual_seed(0)
    rule = create("pna", hidden=16, layers=2)
    a, b = small_cnn(), small_cnn()
    b.load_state_dict(a.state_dict())
    x, y = small_batch()
    for model, every in ((a, 1), (b, 2)):
        opt = GNNOptimizer(model, rule, graph_every=every)
        for _ in range(2):  # the second step of b reuses step 1's context
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert "graph_context" not in GNNOptimizer(small_cnn(), rule).state
    diffs = [not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())]
    assert any(diffs)  # reusing a context is not the same update, but close to it
    assert all(torch.allclose(p, q, atol=1e-2) for p, q in zip(a.parameters(), b.parameters()))


def test_graph_every_defaults_to_the_rules_own():
    from gnnopt.rules import create

    model = small_cnn()
    assert GNNOptimizer(model, create("ff")).graph_every == 1
    assert GNNOptimizer(model, create("ff", graph_every=10)).graph_every == 10
    assert GNNOptimizer(model, create("ff", graph_every=10), graph_every=1).graph_every == 1
    with pytest.raises(ValueError, match="graph_every"):
        create("ff", graph_every=0)


def test_total_steps_anneals_the_update_over_the_last_fraction_and_resumes():
    """With total_steps=T the update is the plain one, then decays linearly to 0 over the last
    anneal_fraction of T (as the same rule under a LambdaLR would), and is 0 after T; the step
    count travels with state_dict."""
    from gnnopt.functional import anneal_factor
    from gnnopt.rules import create

    assert [anneal_factor(t, 10, 0.2) for t in (0, 7, 8, 9, 10, 12)] == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert anneal_factor(10**6, None, 0.2) == 1.0
    torch.manual_seed(0)
    x, y = small_batch()
    models = [small_cnn() for _ in range(3)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    rule = make_sign_descent(create("ff"))
    told = GNNOptimizer(models[0], rule, total_steps=10)
    plain = GNNOptimizer(models[1], rule)
    schedule = torch.optim.lr_scheduler.LambdaLR(plain, lambda t: anneal_factor(t, 10, 0.2))
    for step in range(12):
        for m, opt in zip(models[:2], (told, plain)):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            if opt is told and step == 10:  # the first step past T says so, once
                with pytest.warns(RuntimeWarning, match="past total_steps=10"):
                    opt.step()
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    opt.step()
        schedule.step()
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            torch.testing.assert_close(a, b)
        if step == 4:  # resume halfway: the count comes along
            saved = told.state_dict()
    assert told.state["horizon_step"] == 12
    resumed = GNNOptimizer(models[2], rule, total_steps=10)
    resumed.load_state_dict(saved)
    assert resumed.state["horizon_step"] == 5
    with pytest.raises(ValueError, match="total_steps"):
        GNNOptimizer(small_cnn(), rule, total_steps=0)
    with pytest.raises(ValueError, match="anneal_fraction"):
        create("ff", anneal_fraction=0.0)


def test_a_rule_pickled_before_the_update_form_options_gets_their_defaults():
    """Unpickling a rule whose config predates ``fan_in_power``/``graph_every``/... fills
    them with the defaults, which leave its update as it was."""
    import pickle

    from gnnopt.rules import create
    from gnnopt.rules.base import UPDATE_FORM_DEFAULTS

    rule = create("ff")
    rule.config = {k: v for k, v in rule.config.items() if k not in UPDATE_FORM_DEFAULTS}
    restored = pickle.loads(pickle.dumps(rule))
    assert restored.config == create("ff").config
    GNNOptimizer(small_cnn(), restored).step()  # reads graph_every, fan_in_power, anneal_fraction
