"""Hand-designed baselines, tuned or tuning-free."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gnnopt.bench.baselines import DEFAULT_LR_GRIDS, TUNING_FREE, list_baselines, make_baseline
from gnnopt.bench.data import BatchStream, evaluate, load_dataset
from gnnopt.bench.tasks import get_task


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
        ("SGD-momentum", torch.optim.SGD),
    ],
)
def test_make_baseline_builds_each(name: str, cls: type) -> None:
    model = nn.Linear(3, 2)
    opt = make_baseline(name, model, lr=0.05)
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.05
    assert len(opt.param_groups[0]["params"]) == 2


def test_baseline_settings() -> None:
    params = list(nn.Linear(3, 2).parameters())
    assert make_baseline("sgd", params, 0.1).defaults["momentum"] == 0.9
    assert make_baseline("adamw", params, 1e-3).defaults["weight_decay"] == 1e-2
    assert make_baseline("adamw", params, 1e-3, weight_decay=0.0).defaults["weight_decay"] == 0.0
    assert make_baseline("adam", params, 1e-3).defaults["weight_decay"] == 0.0


def test_accepts_parameters_and_named_parameters() -> None:
    model = nn.Linear(3, 2)
    for params in (model.parameters(), model.named_parameters(), [{"params": list(model.parameters())}]):
        opt = make_baseline("adam", params, 1e-3)
        assert sum(len(g["params"]) for g in opt.param_groups) == 2


@pytest.mark.parametrize("lr", [0, -1e-3, math.nan, math.inf, "0.1", True])
def test_bad_lr(lr: object) -> None:
    with pytest.raises(ValueError, match="lr"):
        make_baseline("adam", nn.Linear(2, 2), lr)  # type: ignore[arg-type]


def test_unknown_baseline_and_empty_params() -> None:
    with pytest.raises(ValueError, match="adam"):
        make_baseline("lion", nn.Linear(2, 2), 1e-3)
    with pytest.raises(ValueError, match="empty"):
        make_baseline("adam", [], 1e-3)


def test_lr_grids() -> None:
    assert list_baselines() == ["adam", "adam-cosine", "adamw", "sgd", "rmsprop", "prodigy", "schedulefree"]
    assert set(DEFAULT_LR_GRIDS) | set(TUNING_FREE) == set(list_baselines())
    assert list(DEFAULT_LR_GRIDS["adam"]) == [1e-3, 3e-3, 6e-3, 1e-2, 2e-2, 3e-2]
    for grid in DEFAULT_LR_GRIDS.values():
        assert len(grid) >= 3 and list(grid) == sorted(grid) and all(lr > 0 for lr in grid)


def test_adam_lowers_fmnist17_loss_on_embedded_data() -> None:
    ds = load_dataset("fmnist", embedded=True)
    task = get_task("fmnist17")
    torch.manual_seed(101)
    model = task.build_model()
    opt = make_baseline("adam", model, 1e-2)
    stream = BatchStream(ds.train, task.batch_size, torch.Generator().manual_seed(101))
    loss_before, _ = evaluate(model, ds.val)
    for _ in range(40):
        x, y = stream.next()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    loss_after, acc_after = evaluate(model, ds.val)
    assert loss_after < loss_before - 0.3
    assert acc_after > 0.3  # chance is 0.1


def test_tuning_free_baselines_are_the_real_packages_at_their_defaults() -> None:
    prodigyopt = pytest.importorskip("prodigyopt")
    schedulefree = pytest.importorskip("schedulefree")
    model = nn.Linear(3, 2)
    prodigy = make_baseline("prodigy", model)
    assert type(prodigy) is prodigyopt.Prodigy and prodigy.defaults["lr"] == 1.0
    free = make_baseline("schedule-free", model)
    assert type(free) is schedulefree.AdamWScheduleFree and free.defaults["lr"] == 0.0025
    assert free.param_groups[0]["train_mode"]  # ready to step


def test_adam_cosine_decays_to_zero_over_the_run() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="total_steps"):
        make_baseline("adam-cosine", model, 1e-2)
    opt = make_baseline("adam-cosine", model, 1e-2, total_steps=10)
    lrs = []
    for _ in range(10):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-2 * (1 + math.cos(math.pi / 10)) / 2)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_schedule_free_is_evaluated_at_its_averaged_iterate(monkeypatch) -> None:
    """The protocol switches an optimizer with train/eval modes to eval for each measurement."""
    pytest.importorskip("schedulefree")
    from gnnopt.bench import protocol

    modes, made = [], []
    real = protocol.evaluate
    monkeypatch.setattr(protocol, "evaluate", lambda model, split: modes.append(made[0].param_groups[0]["train_mode"])
                        or real(model, split))
    ds = load_dataset("fmnist", embedded=True)

    def make(m):
        made.append(make_baseline("schedulefree", m))
        return made[-1]

    result = protocol.train_optimizee(get_task("fmnist17"), ds, make, steps=4, seed=101, record_every=2)
    opt = made[0]
    assert modes == [False, False] and opt.param_groups[0]["train_mode"]
    assert len(result["curve"]) == 2
