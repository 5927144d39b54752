"""Optimizee tasks: the small CNNs that learned optimizers are trained and evaluated on.

A task is a frozen record naming a data set and a CNN layout:

    conv3x3 stride 2, no padding (in -> widths[0]), ReLU
    conv3x3 stride 1, "same" padding (widths[i-1] -> widths[i]), ReLU    for i >= 1
    global average pool, flatten
    linear (widths[-1] -> num_classes)

Task 17 of the Neural Graphs paper (Kofinas et al., ICLR 2024) is ``fmnist17``: widths
16-32-32 on FashionMNIST, 14,378 parameters; task 11 is ``cifar10-cnn``: widths 32-64-64
on CIFAR-10, 56,970 parameters. Tasks 19-26 vary the width and depth on CIFAR-10; the same
families exist on FashionMNIST (``fmnist17-w*``, ``fmnist17-d*``) so they can be measured
offline. Numeric ids are kept as aliases::

    >>> from gnnopt.bench.tasks import get_task
    >>> task = get_task("17")
    >>> model = task.build_model()          # seed torch first for a reproducible init
    >>> task.num_params()
    14378
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

__all__ = ["Task", "get_task", "list_tasks", "DATASET_SHAPES"]

#: Image shape (channels, height, width) of each data set a task can name.
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "fmnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


@dataclass(frozen=True)
class Task:
    """An optimizee: a data set plus the CNN layout trained on it.

    Args:
        name: canonical registry name, e.g. ``"fmnist17"``.
        dataset: ``"fmnist"`` or ``"cifar10"`` (see :func:`gnnopt.data.load_dataset`).
        in_channels: image channels (1 for FashionMNIST, 3 for CIFAR-10).
        widths: output channels of each conv layer, first to last.
        num_classes: outputs of the final linear layer.
        batch_size: optimizee batch size used by training and evaluation.
        aliases: other names (numeric paper ids among them) that resolve to this task.
    """

    name: str
    dataset: str
    in_channels: int
    widths: tuple[int, ...]
    num_classes: int = 10
    batch_size: int = 128
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_SHAPES:
            raise ValueError(
                f"Invalid dataset {self.dataset!r} for task {self.name!r}; "
                f"expected one of {sorted(DATASET_SHAPES)}"
            )
        if not self.widths or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"Invalid widths {self.widths!r}: need one or more positive ints")
        object.__setattr__(self, "widths", tuple(self.widths))  # a list would break hashing
        object.__setattr__(self, "aliases", tuple(self.aliases))
        for field_name in ("in_channels", "num_classes", "batch_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {field_name}: {value!r} (need a positive int)")
        if self.in_channels != DATASET_SHAPES[self.dataset][0]:
            raise ValueError(
                f"Invalid in_channels {self.in_channels} for {self.dataset!r} images "
                f"({DATASET_SHAPES[self.dataset][0]} channels)"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one input image."""
        _, height, width = DATASET_SHAPES[self.dataset]
        return (self.in_channels, height, width)

    def build_model(self) -> nn.Sequential:
        """A freshly initialised optimizee (PyTorch default init; seed torch beforehand).

        Its ``named_parameters()`` come in layer order: ``conv1.weight``, ``conv1.bias``,
        ..., ``fc.weight``, ``fc.bias``.
        """
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = self.in_channels
        for i, out_ch in enumerate(self.widths, start=1):
            if i == 1:
                # Stride 2, no padding on the first conv: 28x28 -> 13x13, 32x32 -> 15x15.
                layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2)
            else:
                layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
            layers[f"relu{i}"] = nn.ReLU()
            in_ch = out_ch
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(in_ch, self.num_classes)
        return nn.Sequential(layers)

    def num_params(self) -> int:
        """Number of trainable parameters of :meth:`build_model`, computed without building it."""
        total, in_ch = 0, self.in_channels
        for out_ch in self.widths:
            total += out_ch * in_ch * 9 + out_ch
            in_ch = out_ch
        return total + in_ch * self.num_classes + self.num_classes


# Depth family of the follow-up study (tasks 23-26); depth 3 is the base 32-64-64 layout.
_DEPTH_WIDTHS: dict[int, tuple[int, ...]] = {
    1: (32,),
    2: (32, 64),
    3: (32, 64, 64),
    4: (32, 64, 64, 128),
    5: (32, 64, 64, 128, 128),
}

# A layout that two families share (w32 = d3 on CIFAR-10 = task 11; w16 = fmnist17) is one
# task with several names, so a sweep never trains the same network twice under two names.
_TASKS: tuple[Task, ...] = (
    Task("fmnist17", "fmnist", 1, (16, 32, 32), aliases=("17", "fmnist-cnn", "fmnist17-w16")),
    Task("cifar10-cnn", "cifar10", 3, (32, 64, 64), aliases=("11", "cifar10-cnn-w32", "cifar10-cnn-d3")),
    # Tasks 19-22: CIFAR-10 widths h-2h-2h.
    *(
        Task(f"cifar10-cnn-w{h}", "cifar10", 3, (h, 2 * h, 2 * h), aliases=(str(i),))
        for i, h in zip(range(19, 23), (8, 16, 64, 128))
    ),
    # Tasks 23-26: CIFAR-10 depths.
    *(
        Task(f"cifar10-cnn-d{d}", "cifar10", 3, _DEPTH_WIDTHS[d], aliases=(str(i),))
        for i, d in zip(range(23, 27), (1, 2, 4, 5))
    ),
    # The same families on FashionMNIST (no paper ids).
    *(
        Task(f"fmnist17-w{h}", "fmnist", 1, (h, 2 * h, 2 * h), aliases=("fmnist17-d3",) if h == 32 else ())
        for h in (8, 32, 64, 128)
    ),
    *(Task(f"fmnist17-d{d}", "fmnist", 1, _DEPTH_WIDTHS[d]) for d in (1, 2, 4, 5)),
)


def _build_index(tasks: tuple[Task, ...]) -> dict[str, Task]:
    index: dict[str, Task] = {}
    for task in tasks:
        for key in (task.name, *task.aliases):
            if key in index:
                raise RuntimeError(f"task name {key!r} registered twice")  # programming error
            index[key] = task
    return index


_INDEX = _build_index(_TASKS)


def list_tasks(*, aliases: bool = False) -> list[str]:
    """Canonical task names in registry order; with ``aliases=True`` every accepted name."""
    if aliases:
        return list(_INDEX)
    return [task.name for task in _TASKS]


def get_task(name_or_id: str | int | Task) -> Task:
    """Look a task up by name or numeric paper id (``"fmnist17"``, ``"17"`` or ``17``).

    A :class:`Task` is returned unchanged.
    """
    if isinstance(name_or_id, Task):
        return name_or_id
    if isinstance(name_or_id, bool) or not isinstance(name_or_id, (str, int)):
        raise ValueError(f"Invalid task: {name_or_id!r} (expected a name or a numeric id)")
    key = str(name_or_id).strip().lower()
    try:
        return _INDEX[key]
    except KeyError:
        raise ValueError(
            f"Unknown task {name_or_id!r}; valid names: {', '.join(list_tasks())} "
            f"(or an alias: {', '.join(k for k, t in _INDEX.items() if k != t.name)})"
        ) from None
