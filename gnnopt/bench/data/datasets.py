"""Whole data sets as tensors: train / validation / test splits, normalised, on a device.

The validation split is a fixed, seeded subset of the *training* images; the test split is
the official test set, so model selection never sees it. Images are normalised with fixed
per-channel constants. ``load_dataset("fmnist", embedded=True)`` reads a small class-balanced
subset shipped in the package (for demos and fast tests; never report results on it).

Shapes:
    Split.x: ``(N, C, H, W)`` float32, normalised; Split.y: ``(N,)`` int64.
"""
from __future__ import annotations

import gzip
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .sources import (_EMBEDDED_FILE, _FMNIST_FILES, _NAME_ALIASES, NORMALIZATION, _idx_path, _locate_cifar10,
                      _locate_fmnist, _read_cifar_batch, read_idx)


@dataclass(eq=False)  # tensors: == would be elementwise
class Split:
    """Images ``x`` ``(N, C, H, W)`` float32 (normalised) and labels ``y`` ``(N,)`` int64."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or not self.x.is_floating_point():
            raise ValueError(
                f"Split.x must be a float (N, C, H, W) tensor, got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dim() != 1 or self.y.dtype != torch.int64:
            raise ValueError(
                f"Split.y must be an int64 (N,) tensor, got {self.y.dtype} {tuple(self.y.shape)}"
            )
        if len(self.x) != len(self.y):
            raise ValueError(f"Split has {len(self.x)} images but {len(self.y)} labels")
        if self.x.device != self.y.device:
            raise ValueError(f"Split.x is on {self.x.device} but Split.y on {self.y.device}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> Split:
        """This split on ``device`` (itself when already there, else a copy)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        return Split(self.x.to(device), self.y.to(device))


@dataclass(eq=False)
class Dataset:
    """Train / validation / test splits of one data set and where they were read from."""

    train: Split
    val: Split
    test: Split
    name: str
    source: str

    def to(self, device: torch.device | str) -> Dataset:
        """The three splits on ``device``."""
        splits = (self.train.to(device), self.val.to(device), self.test.to(device))
        return Dataset(*splits, self.name, self.source)


def _normalize(images: Tensor, dataset: str, device: torch.device) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 normalised, converted on ``device``."""
    mean, std = NORMALIZATION[dataset]
    x = images.to(device).float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def _split_train_val(
    images: Tensor, labels: Tensor, val_size: int, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Carve a fixed, seeded validation subset out of the training images."""
    n = len(labels)
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n:
        raise ValueError(f"Invalid val_size: {val_size!r} (need an int in [0, {n}))")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    val_idx, _ = perm[:val_size].sort()
    train_idx, _ = perm[val_size:].sort()
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def _make_dataset(
    name: str,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    source: str,
    device: torch.device,
) -> Dataset:
    def split(part: tuple[Tensor, Tensor]) -> Split:
        images, labels = part
        if images.dim() == 3:  # (N, H, W) grey images
            images = images.unsqueeze(1)
        return Split(_normalize(images, name, device), labels.to(device=device, dtype=torch.int64))

    return Dataset(split(train), split(val), split(test), name, source)


# ----------------------------------------------------------------------------- CIFAR-10


def _load_embedded(device: torch.device) -> Dataset:
    from safetensors.torch import load as load_safetensors

    resource = importlib.resources.files("gnnopt").joinpath("_data").joinpath(_EMBEDDED_FILE)
    try:
        blob = gzip.decompress(resource.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the embedded FashionMNIST subset ({_EMBEDDED_FILE}) is missing from the installed "
            "package; reinstall gnnopt or regenerate it with scripts/make_embedded_subset.py"
        ) from None
    t = load_safetensors(blob)
    parts = [(t[f"{s}_x"], t[f"{s}_y"]) for s in ("train", "val", "test")]
    source = "embedded subset (6,000 train / 1,000 val / 2,000 test images; not for reported results)"
    return _make_dataset("fmnist", *parts, source=source, device=device)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    embedded: bool = False,
    val_size: int = 10_000,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a whole data set into tensors on ``device``.

    Args:
        name: ``"fmnist"`` or ``"cifar10"`` (``"fashion-mnist"``, ``"cifar-10"`` also accepted).
        data_dir: where to read from; when given, nothing else is searched (see module doc).
        device: where the tensors live.
        embedded: read the small FashionMNIST subset shipped in the package instead.
        val_size: training images held out as the validation split (not for ``embedded``).
        seed: seed of the validation carve-out; the same seed gives the same split.
        download: allow a torchvision download when nothing is found locally.

    Raises:
        FileNotFoundError: the data set is nowhere to be found; the message says how to get it.
    """
    key = _NAME_ALIASES.get(str(name).strip().lower())
    if key is None:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {sorted(set(_NAME_ALIASES.values()))}")
    device = torch.device(device)
    if embedded:
        if key != "fmnist":
            raise ValueError(f"embedded=True is only available for 'fmnist', not {name!r}")
        return _load_embedded(device)

    if key == "fmnist":
        folder = _locate_fmnist(data_dir, download)
        arrays = {k: read_idx(_idx_path(folder, stem)) for k, stem in _FMNIST_FILES.items()}
        train_images, train_labels = arrays["train_x"], arrays["train_y"]
        test = (arrays["test_x"], arrays["test_y"])
    else:
        folder = _locate_cifar10(data_dir, download)
        batches = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
        train_images = torch.cat([b[0] for b in batches])
        train_labels = torch.cat([b[1] for b in batches])
        test = _read_cifar_batch(folder / "test_batch")
    train, val = _split_train_val(train_images, train_labels, val_size, seed)
    return _make_dataset(key, train, val, test, source=str(folder), device=device)


def synthetic_cifar10(
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 256,
    seed: int = 0,
    *,
    device: torch.device | str = "cpu",
) -> Dataset:
    """Random CIFAR-shaped images (3x32x32) with random labels, for tests of CIFAR code paths.

    Its ``source`` says ``"synthetic (not a result)"``: nothing measured on it means anything.
    """
    for label, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Invalid {label}: {n!r} (need a positive int)")
    gen = torch.Generator().manual_seed(seed)

    def part(n: int) -> tuple[Tensor, Tensor]:
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        return images, torch.randint(0, 10, (n,), generator=gen)

    return _make_dataset(
        "cifar10", part(n_train), part(n_val), part(n_test), "synthetic (not a result)", torch.device(device)
    )
