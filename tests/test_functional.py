"""The pure update function: the math of SPEC section 2 and meta-gradients into every rule."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.func import functional_call

from conftest import small_batch, small_cnn
from gnnopt.features import BETAS, FEATURE_SIZE, preprocess
from gnnopt.functional import init_momenta, learned_update
from gnnopt.graph import build_neural_graph
from gnnopt.rules import create


def test_preprocess_matches_andrychowicz():
    x = torch.tensor([2.0, -3e-2, 1e-6, -1e-6, 0.0])
    out = preprocess(x.unsqueeze(0))[0]
    log, sign = out[:5], out[5:]
    assert math.isclose(log[0].item(), math.log(2.0) / 10, rel_tol=1e-6) and sign[0] == 1
    assert math.isclose(log[1].item(), math.log(3e-2) / 10, rel_tol=1e-6) and sign[1] == -1
    assert log[2] == -1 and math.isclose(sign[2].item(), 1e-6 * math.exp(10), rel_tol=1e-5)
    assert log[4] == -1 and sign[4] == 0
    assert FEATURE_SIZE == 14


def test_update_formula_and_momenta(rule_name="ff"):
    torch.manual_seed(0)
    model = small_cnn()
    params = list(model.parameters())
    named = list(model.named_parameters())
    graph = build_neural_graph([n for n, _ in named], [p.shape for p in params])
    rule = create(rule_name)
    grads = [torch.randn_like(p) for p in params]
    momenta = [torch.randn(len(BETAS), *p.shape) for p in params]
    result = learned_update(rule, graph, params, grads, momenta)
    for m_old, m_new, g in zip(momenta, result.momenta, grads):
        for k, beta in enumerate(BETAS):
            torch.testing.assert_close(m_new[k], beta * m_old[k] + g)
    # delta = d * lambda * exp(lambda * m) with (d, m) read from the rule directly
    from gnnopt.features import element_features
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])
    feats = element_features(flat(params).detach(), flat(grads),
                             torch.cat([m.reshape(5, -1) for m in result.momenta], 1))
    out, _ = rule(feats, graph)
    expected = out[:, 0] * 0.01 * torch.exp(0.01 * out[:, 1])
    torch.testing.assert_close(flat(result.updates), expected)


def test_meta_gradients_reach_every_rule_weight(rule_name):
    """A loss on the updated parameters back-propagates into the rule: non-zero, finite."""
    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    graph = build_neural_graph([n for n, _ in named], [p.shape for _, p in named])
    rule = create(rule_name)
    params = [p.detach() for _, p in named]
    momenta = [init_momenta(p) for p in params]
    state = rule.init_state(graph, torch.device("cpu"))
    x, y = small_batch()
    total = 0.0
    for step in range(2):  # two steps so a recurrent state is non-zero when it is read
        leaves = [p.detach().requires_grad_() for p in params]
        loss = F.cross_entropy(functional_call(model, {n: t for (n, _), t in zip(named, leaves)}, (x,)), y)
        grads = torch.autograd.grad(loss, leaves)
        result = learned_update(rule, graph, params, grads, momenta, state)
        params = [p + u for p, u in zip(params, result.updates)]
        momenta, state = result.momenta, result.rule_state
        total = total + F.cross_entropy(functional_call(model, dict(zip([n for n, _ in named], params)), (x,)), y)
    total.backward()
    no_grad = [n for n, w in rule.named_parameters() if w.grad is None or not torch.count_nonzero(w.grad)]
    assert not no_grad, f"no meta-gradient reached: {no_grad}"
    assert all(torch.isfinite(w.grad).all() for w in rule.parameters())


def test_second_order_lets_gradients_flow_through_the_features():
    torch.manual_seed(0)
    named = list(torch.nn.Linear(3, 2).named_parameters())
    rule = create("ff", hidden=8)
    with torch.no_grad():
        rule.head.net[-1].weight.normal_()
    params = [p.detach() for _, p in named]
    graph = build_neural_graph([n for n, _ in named], [p.shape for p in params])
    momenta = [init_momenta(p) for p in params]
    results = []
    for second_order in (False, True):
        grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1)).requires_grad_()
                 for p in params]
        result = learned_update(rule, graph, params, grads, momenta, second_order=second_order)
        sum(u.sum() for u in result.updates).backward()
        results.append((result, grads))
    (first, first_grads), (second, second_grads) = results
    assert all(g.grad is None for g in first_grads)  # first order: the features are constants
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in second_grads)
    for a, b in zip(first.updates, second.updates):
        torch.testing.assert_close(a, b)  # the same values either way


def test_momenta_of_another_dtype_are_read_as_float32(rule_name):
    """A state cast to a float64 (or float16) parameter's dtype still fits the float32 rule."""
    torch.manual_seed(0)
    named = list(small_cnn().named_parameters())
    params = [p.detach() for _, p in named]
    graph = build_neural_graph([n for n, _ in named], [p.shape for p in params])
    rule = create(rule_name)
    grads = [torch.randn_like(p) for p in params]
    momenta = [torch.randn(len(BETAS), *p.shape) for p in params]
    expected = learned_update(rule, graph, params, grads, momenta)
    for dtype in (torch.float64, torch.float16):
        cast = [m.to(dtype).float() for m in momenta]  # what the cast leaves of them
        reference = learned_update(rule, graph, params, grads, cast) if dtype == torch.float16 else expected
        result = learned_update(rule, graph, params, grads, [m.to(dtype) for m in momenta])
        assert all(m.dtype == torch.float32 for m in result.momenta)
        for a, b in zip(result.updates, reference.updates):
            assert torch.equal(a, b)


def test_fan_in_of_weights_and_their_biases_and_norms():
    from gnnopt.functional import fan_in, fan_in_factors

    shapes = ((16, 1, 3, 3), (16,), (16,), (32, 16, 3, 3), (32,), (10, 32), (10,), (7,), ())
    assert fan_in(shapes) == (9, 9, 9, 144, 144, 32, 32, None, None)
    factors = fan_in_factors(shapes, 0.5, 144)
    assert factors[:3] == (4.0, 4.0, 4.0) and factors[3] == 1.0 and factors[5] == math.sqrt(144 / 32)
    assert factors[7:] == (1.0, 1.0)  # unknown fan-in: no factor
    assert fan_in_factors(shapes, 0.0, 144) == (1.0,) * len(shapes)


@pytest.mark.parametrize("form", [{"fan_in_power": 0.5}, {"fan_in_power": 0.5, "depth_power": 2.0, "depth_ref": 2}])
def test_structural_factors_scale_each_tensor_as_a_per_tensor_lr_would(form):
    """fan_in_power and depth_power are fixed per-tensor factors of the update: the same as
    giving each tensor its own param group with lr (ref / fan_in) ** α * min(1, (ref / depth) ** β)."""
    from gnnopt import GNNOptimizer
    from gnnopt.functional import depth, fan_in_factors, step_factors

    torch.manual_seed(0)
    model = small_cnn()
    x, y = small_batch()
    base, scaled = create("ff"), create("ff", **form)
    scaled.load_state_dict(base.state_dict())
    shapes = tuple(tuple(p.shape) for p in model.parameters())
    factors = step_factors(shapes, 0.5, 144, form.get("depth_power", 0.0), form.get("depth_ref", 4))
    if "depth_power" in form:  # one more factor, the same for every tensor, at most 1
        assert depth(shapes) == 3
        assert factors == tuple(f * (2 / 3) ** 2 for f in fan_in_factors(shapes, 0.5, 144))
        assert step_factors(shapes, 0.5, 144, 2.0, 6) == fan_in_factors(shapes, 0.5, 144)
    assert len(set(factors)) > 1
    models = [small_cnn() for _ in range(2)]
    for m in models:
        m.load_state_dict(model.state_dict())
    groups = [{"params": [(n, p)], "lr": f} for (n, p), f in zip(models[0].named_parameters(), factors)]
    optimizers = [GNNOptimizer(groups, base), GNNOptimizer(models[1].named_parameters(), scaled)]
    for _ in range(3):
        for m, opt in zip(models, optimizers):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.equal(next(models[1].parameters()), next(model.parameters()))  # it did step


@pytest.mark.parametrize("rule_name, tracked", [("pna", False), ("pna", True), ("ff", False), ("pna_lstm", False)])
def test_nominal_blend_turns_part_of_each_update_to_adams_direction_at_its_rms(rule_name, tracked):
    """``nominal_blend`` B: each tensor's update becomes ``(1 - B) u - B rms(u) a / rms(a)``,
    ``u`` the update without it and ``a`` the direction of ``torch.optim.Adam`` (betas 0.9 and
    0.999) run on the same gradients, in the optimizer's in-place step and with autograd on;
    the second moment rides in the rule state, beside a recurrent rule's own."""
    from gnnopt.functional import NOMINAL_KEY

    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    graph = build_neural_graph([n for n, _ in named], [p.shape for _, p in named])
    params = [p.detach() for _, p in named]
    base = create(rule_name, fan_in_power=0.5)
    rules = {b: create(rule_name, fan_in_power=0.5, nominal_blend=b) for b in (0.5, 1.0)}
    for rule in rules.values():
        rule.load_state_dict(base.state_dict())
    shadows = [p.clone().requires_grad_() for p in params]
    adam = torch.optim.Adam(shadows, lr=1.0)
    momenta = {b: [init_momenta(p) for p in params] for b in (0.0, *rules)}
    states = {b: base.init_state(graph, torch.device("cpu")) for b in momenta}
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        before = [s.detach().clone() for s in shadows]
        for s, g in zip(shadows, grads):
            s.grad = g.clone()
        adam.step()  # lr 1: the step is minus Adam's direction
        directions = [b - s.detach() for s, b in zip(shadows, before)]
        with torch.set_grad_enabled(tracked):
            plain = learned_update(base, graph, params, grads, momenta[0.0], states[0.0])
            momenta[0.0], states[0.0] = plain.momenta, plain.rule_state
            for blend, rule in rules.items():
                out = learned_update(rule, graph, params, grads, momenta[blend], states[blend])
                momenta[blend], states[blend] = out.momenta, out.rule_state
                assert set(out.rule_state) == {NOMINAL_KEY, *(plain.rule_state or {})}
                for u, v, a in zip(plain.updates, out.updates, directions):
                    u, v = u.detach(), v.detach()
                    rms = u.square().mean().sqrt()
                    torch.testing.assert_close(v, (1 - blend) * u - blend * rms * a / a.square().mean().sqrt(),
                                               rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="nominal_blend"):
        create(rule_name, nominal_blend=1.5)


def test_scale_module_starts_as_the_rule_and_then_multiplies_each_tensor():
    """A scale module (``scale_hidden``) starts at zero output: the rule's own updates, bit for
    bit. Its output ``s_t`` multiplies tensor ``t``'s update by ``exp(s_t)``, from what
    :func:`tensor_features` reads: here the training progress and whether the length is known."""
    from gnnopt import GNNOptimizer
    from gnnopt.features import TENSOR_FEATURE_SIZE
    from gnnopt.functional import tensor_features

    torch.manual_seed(0)
    model = small_cnn()
    named = list(model.named_parameters())
    graph = build_neural_graph([n for n, _ in named], [p.shape for _, p in named])
    params = [p.detach() for _, p in named]
    grads = [torch.randn_like(p) for p in params]
    momenta = [init_momenta(p) for p in params]
    for hidden in (0, 4):
        plain, scaled = create("pna", hidden=8, layers=1, head_hidden=8), create(
            "pna", hidden=8, layers=1, head_hidden=8, scale_hidden=hidden)
        scaled.load_state_dict({**scaled.state_dict(), **plain.state_dict()})
        with torch.no_grad():
            expected = learned_update(plain, graph, params, grads, momenta).updates
            got = learned_update(scaled, graph, params, grads, momenta, progress=(5, 10)).updates
        assert all(torch.equal(a, b) for a, b in zip(expected, got))

    feats = tensor_features(graph, params, grads, (5, 10))
    assert feats.shape == (len(params), TENSOR_FEATURE_SIZE) and torch.isfinite(feats).all()
    assert torch.all(feats[:, 5] == 0.5) and torch.all(feats[:, 6] == 1.0)  # t / T, T known
    assert torch.all(tensor_features(graph, params, grads)[:, 5:8] == 0)  # step 0, length unknown
    torch.testing.assert_close(feats[:, 8], torch.stack([p.square().mean().sqrt().log() / 10 for p in params]))

    # a linear module that doubles the update when the length is known
    rule = create("ff", scale_hidden=0)
    with torch.no_grad():
        rule.scale.net[-1].weight[0, 6] = math.log(2.0)
    x, y = small_batch()
    steps = []
    for total in (None, 100):
        m = small_cnn()
        m.load_state_dict(model.state_dict())
        opt = GNNOptimizer(m, rule, total_steps=total)
        F.cross_entropy(m(x), y).backward()
        opt.step()
        steps.append([a - b for a, b in zip(m.parameters(), model.parameters())])
    for untold, told in zip(*steps):
        torch.testing.assert_close(told, 2 * untold)


def test_a_scale_module_is_added_to_a_saved_rule_and_trained_alone(tmp_path):
    from gnnopt.training import TrainConfig
    from gnnopt.training.init import initial_rule, trained_parameters

    create("ff", hidden=8).save_pretrained(tmp_path / "ff")
    cfg = TrainConfig(rule="ff", rule_config={"scale_hidden": 4}, init=str(tmp_path / "ff"), train_only="scale")
    rule = initial_rule(cfg)
    assert rule.config["hidden"] == 8 and rule.scale is not None
    trained = trained_parameters(rule, cfg.trained_modules)
    assert {id(p) for p in trained} == {id(p) for p in rule.scale.parameters()}
