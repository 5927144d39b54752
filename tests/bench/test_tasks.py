"""The optimizee task registry (SPEC section 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnopt.bench.tasks import Task, get_task, list_tasks


@pytest.mark.parametrize(
    ("name", "count"),
    [("fmnist17", 14_378), ("17", 14_378), ("fmnist-cnn", 14_378), ("cifar10-cnn", 56_970), ("11", 56_970)],
)
def test_paper_parameter_counts(name: str, count: int) -> None:
    task = get_task(name)
    model = task.build_model()
    assert sum(p.numel() for p in model.parameters()) == count
    assert task.num_params() == count


def test_numeric_ids_as_ints() -> None:
    assert get_task(17) is get_task("fmnist17")
    assert get_task(11) is get_task("cifar10-cnn")


@pytest.mark.parametrize(
    ("alias", "dataset", "widths"),
    [
        ("19", "cifar10", (8, 16, 16)),
        ("20", "cifar10", (16, 32, 32)),
        ("21", "cifar10", (64, 128, 128)),
        ("22", "cifar10", (128, 256, 256)),
        ("cifar10-cnn-w32", "cifar10", (32, 64, 64)),
        ("23", "cifar10", (32,)),
        ("24", "cifar10", (32, 64)),
        ("cifar10-cnn-d3", "cifar10", (32, 64, 64)),
        ("25", "cifar10", (32, 64, 64, 128)),
        ("26", "cifar10", (32, 64, 64, 128, 128)),
        ("fmnist17-w8", "fmnist", (8, 16, 16)),
        ("fmnist17-w16", "fmnist", (16, 32, 32)),
        ("fmnist17-w32", "fmnist", (32, 64, 64)),
        ("fmnist17-w64", "fmnist", (64, 128, 128)),
        ("fmnist17-w128", "fmnist", (128, 256, 256)),
        ("fmnist17-d1", "fmnist", (32,)),
        ("fmnist17-d2", "fmnist", (32, 64)),
        ("fmnist17-d3", "fmnist", (32, 64, 64)),
        ("fmnist17-d4", "fmnist", (32, 64, 64, 128)),
        ("fmnist17-d5", "fmnist", (32, 64, 64, 128, 128)),
    ],
)
def test_width_and_depth_families(alias: str, dataset: str, widths: tuple[int, ...]) -> None:
    task = get_task(alias)
    assert task.dataset == dataset
    assert task.widths == widths
    assert task.in_channels == (1 if dataset == "fmnist" else 3)
    assert task.batch_size == 128 and task.num_classes == 10


@pytest.mark.parametrize("name", list_tasks(aliases=True))
def test_every_name_builds_and_runs(name: str) -> None:
    task = get_task(name)
    assert name == task.name or name in task.aliases
    torch.manual_seed(0)
    model = task.build_model()
    assert isinstance(model, nn.Sequential)
    assert sum(p.numel() for p in model.parameters()) == task.num_params()
    x = torch.randn(2, *task.input_shape)
    assert model(x).shape == (2, 10)


def test_input_shapes() -> None:
    assert get_task("fmnist17").input_shape == (1, 28, 28)
    assert get_task("cifar10-cnn").input_shape == (3, 32, 32)


def test_layer_layout_and_parameter_order() -> None:
    model = get_task("fmnist17").build_model()
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert [s for _, s in shapes] == [
        (16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (32, 32, 3, 3), (32,), (10, 32), (10,)
    ]
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert convs[0].stride == (2, 2) and convs[0].padding == (0, 0)
    assert all(c.stride == (1, 1) and c.padding == (1, 1) for c in convs[1:])
    kinds = [type(m) for m in model]
    assert kinds == [nn.Conv2d, nn.ReLU] * 3 + [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]


def test_init_follows_torch_seed() -> None:
    task = get_task("fmnist17")
    torch.manual_seed(3)
    a = task.build_model()
    torch.manual_seed(3)
    b = task.build_model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_list_tasks_canonical_and_unique() -> None:
    names = list_tasks()
    assert len(names) == len(set(names))
    assert names[:2] == ["fmnist17", "cifar10-cnn"]
    assert "17" not in names and "17" in list_tasks(aliases=True)
    assert all(get_task(n).name == n for n in names)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="fmnist17") as info:
        get_task("mnist-mlp")
    assert "cifar10-cnn" in str(info.value)
    with pytest.raises(ValueError):
        get_task(99)
    with pytest.raises(ValueError):
        get_task(None)  # type: ignore[arg-type]


def test_task_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="dataset"):
        Task("x", "imagenet", 3, (8,))
    with pytest.raises(ValueError, match="widths"):
        Task("x", "fmnist", 1, ())
    with pytest.raises(ValueError, match="batch_size"):
        Task("x", "fmnist", 1, (8,), batch_size=0)
    with pytest.raises(ValueError, match="in_channels"):
        Task("x", "cifar10", 1, (8,))
    assert Task("x", "fmnist", 1, [8, 16]).widths == (8, 16)  # type: ignore[arg-type]
