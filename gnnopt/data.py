"""Data sources for the optimizee tasks: whole data sets as tensors, batches drawn by index.

FashionMNIST is looked for, in order (SPEC section 6):

1. ``data_dir`` when given (only there: an explicit directory is never second-guessed);
2. the ``GNNOPT_DATA`` environment variable;
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package);
4. the torchvision layout ``<root>/FashionMNIST/raw`` under ``./data`` and the gnnopt cache;
5. a torchvision download, where torchvision is installed and the network allows.

In each directory the four IDX files (gzipped or not) may sit in ``dir``,
``dir/fashion-mnist`` or ``dir/FashionMNIST/raw``. CIFAR-10 reads the standard
``cifar-10-batches-py`` folder (pass the folder or its parent).

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
import os
import pickle
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Split",
    "Dataset",
    "BatchStream",
    "load_dataset",
    "synthetic_cifar10",
    "evaluate",
    "read_idx",
    "DATA_ENV_VAR",
    "NORMALIZATION",
]

#: Environment variable naming a data root (same role as ``--data-dir``).
DATA_ENV_VAR = "GNNOPT_DATA"

#: Per-channel (mean, std) of each data set's training images, on the [0, 1] scale.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fmnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

_NAME_ALIASES = {
    "fmnist": "fmnist",
    "fashion-mnist": "fmnist",
    "fashionmnist": "fmnist",
    "fashion_mnist": "fmnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
}

# Module-level so that tests can point them elsewhere.
_SYSTEM_FMNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
_EMBEDDED_FILE = "fmnist_subset.safetensors.gz"
_FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

_HOW_TO_GET = {
    "fmnist": (
        "Get FashionMNIST with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
        "or put the four IDX files (train-images-idx3-ubyte.gz, ...) in a directory and pass "
        f"it as data_dir / --data-dir or set {DATA_ENV_VAR}; `pip install torchvision` lets "
        "gnnopt download them where the network allows."
    ),
    "cifar10": (
        "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "extract it (`tar xzf cifar-10-python.tar.gz`) and pass the resulting "
        f"cifar-10-batches-py folder or its parent as data_dir / --data-dir or set {DATA_ENV_VAR}."
    ),
}


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


# ----------------------------------------------------------------------------- IDX files


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        raw = gzip.decompress(raw)
    return raw


def read_idx(path: str | Path) -> Tensor:
    """Parse one IDX file (gzipped or not) of unsigned or signed bytes into a tensor.

    The format (LeCun's MNIST page): two zero bytes, a dtype code (0x08 uint8, 0x09 int8),
    the number of dimensions, then each dimension as a big-endian uint32, then the data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: torch.uint8, 0x09: torch.int8}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unsupported IDX element type 0x{raw[2]:02x} (only bytes are read)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for d in dims:
        count *= d
    if len(raw) - header != count:
        raise ValueError(f"{path}: expected {count} values for shape {dims}, found {len(raw) - header}")
    if count == 0:
        return torch.empty(dims, dtype=dtypes[raw[2]])
    # bytearray: a writable buffer, so frombuffer does not warn about sharing read-only memory.
    return torch.frombuffer(bytearray(raw[header:]), dtype=dtypes[raw[2]]).reshape(dims)


def _find_idx_dir(root: Path) -> Path | None:
    """The directory under ``root`` holding all four FashionMNIST IDX files, if any."""
    for sub in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
        if all(_idx_path(sub, stem) is not None for stem in _FMNIST_FILES.values()):
            return sub
    return None


def _idx_path(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gnnopt" / "data"


def _torchvision_download(name: str, root: Path) -> str | None:
    """Download with torchvision into ``root``; the reason it failed, or None on success."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return "torchvision is not installed"
    cls = tvd.FashionMNIST if name == "fmnist" else tvd.CIFAR10
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTP...)
        return f"torchvision download into {root} failed: {exc}"
    return None


def _locate_fmnist(data_dir: str | Path | None, download: bool) -> Path:
    if data_dir is not None:
        roots = [Path(data_dir).expanduser()]
        download_root = roots[0]
    else:
        env = os.environ.get(DATA_ENV_VAR)
        roots = [Path(env).expanduser()] if env else []
        roots += [*_SYSTEM_FMNIST_DIRS, Path.cwd() / "data", _cache_root()]
        download_root = roots[0] if env else _cache_root()
    for root in roots:
        found = _find_idx_dir(root)
        if found is not None:
            return found
    failure = "download=False"
    if download:
        failure = _torchvision_download("fmnist", download_root)
        found = _find_idx_dir(download_root)
        if failure is None and found is not None:
            return found
    raise FileNotFoundError(
        "FashionMNIST not found. Looked for its IDX files in "
        + ", ".join(str(r) for r in roots)
        + " (and their fashion-mnist/ and FashionMNIST/raw/ subfolders); "
        + f"no download ({failure}). {_HOW_TO_GET['fmnist']}"
    )


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


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10's batches hold (numpy arrays, lists, dicts, bytes).

    The batches are pickles; refusing every other global keeps a tampered file from running
    code when it is read.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}; refusing to load it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is deprecated in numpy 2
            return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    try:
        import numpy as np  # the batches are pickled numpy arrays: their own format needs numpy
    except ImportError:
        raise ImportError("reading CIFAR-10's python batches needs numpy: pip install numpy") from None
    with open(path, "rb") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no data/labels)")

    data = np.ascontiguousarray(batch[b"data"], dtype=np.uint8)
    images = torch.from_numpy(data).reshape(-1, 3, 32, 32).clone()
    labels = torch.tensor(list(batch[b"labels"]), dtype=torch.int64)
    if len(images) != len(labels):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _locate_cifar10(data_dir: str | Path | None, download: bool) -> Path:
    if data_dir is not None:
        roots = [Path(data_dir).expanduser()]
    else:
        env = os.environ.get(DATA_ENV_VAR)
        roots = [Path(env).expanduser()] if env else []
        roots += [Path.cwd() / "data", _cache_root()]
    looked = []
    for root in roots:
        for folder in (root, root / "cifar-10-batches-py"):
            looked.append(str(folder))
            if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
                return folder
    failure = "download=False"
    if download:
        failure = _torchvision_download("cifar10", roots[0])
        folder = roots[0] / "cifar-10-batches-py"
        if failure is None and (folder / "test_batch").is_file():
            return folder
    raise FileNotFoundError(
        f"CIFAR-10 not found. Looked for cifar-10-batches-py in {', '.join(looked)}; "
        f"no download ({failure}). {_HOW_TO_GET['cifar10']}"
    )


# ----------------------------------------------------------------------------- loading


def _load_embedded(device: torch.device) -> Dataset:
    from safetensors.torch import load as load_safetensors

    resource = importlib.resources.files(__package__ or "gnnopt").joinpath("_data").joinpath(_EMBEDDED_FILE)
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


# ----------------------------------------------------------------------------- batches


class BatchStream:
    """Endless random mini-batches of a :class:`Split`, drawn by index (no DataLoader).

    Each epoch is a fresh permutation drawn from ``generator`` (on the CPU, so a seed gives
    the same batches on any device); the last incomplete batch of an epoch is dropped, so
    every batch has exactly ``batch_size`` examples.

    Args:
        split: the examples to draw from.
        batch_size: examples per batch, at most ``len(split)``.
        generator: a CPU ``torch.Generator``; by default one seeded from torch's global RNG,
            so ``torch.manual_seed`` makes the stream reproducible.
    """

    def __init__(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (need a positive int)")
        if batch_size > len(split):
            raise ValueError(f"batch_size {batch_size} exceeds the split's {len(split)} examples")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        elif generator.device.type != "cpu":
            raise ValueError(f"BatchStream needs a CPU generator, got one on {generator.device}")
        self.split = split
        self.batch_size = batch_size
        self.generator = generator
        self.epoch = 0
        self._perm: Tensor | None = None  # on the split's device
        self._pos = 0

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch ``(x, y)``: ``(batch_size, C, H, W)`` and ``(batch_size,)``."""
        if self._perm is None or self._pos + self.batch_size > len(self._perm):
            if self._perm is not None:
                self.epoch += 1
            perm = torch.randperm(len(self.split), generator=self.generator)
            self._perm = perm.to(self.split.device)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.split.x.index_select(0, idx), self.split.y.index_select(0, idx)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        return self.next()

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream, so a resumed run draws the same batches."""
        return {
            "generator": self.generator.get_state(),
            "perm": None if self._perm is None else self._perm.cpu(),
            "pos": self._pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].clone())
        perm = state["perm"]
        self._perm = None if perm is None else perm.to(self.split.device)
        self._pos = int(state["pos"])
        self.epoch = int(state["epoch"])


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (in [0, 1]) of ``model`` on ``split``, in eval mode.

    The model's previous train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (need a positive int)")
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    was_training = model.training
    model.eval()
    try:
        losses, corrects = [], []
        for start in range(0, len(split), batch_size):
            x = split.x[start : start + batch_size]
            y = split.y[start : start + batch_size]
            logits = model(x)
            losses.append(F.cross_entropy(logits, y, reduction="sum"))
            corrects.append((logits.argmax(dim=1) == y).sum())
    finally:
        model.train(was_training)
    # One device-to-host copy at the end; float64 sums on the CPU (not every device has them).
    loss_sum = torch.stack(losses).cpu().double().sum().item()
    correct = torch.stack(corrects).cpu().sum().item()
    n = len(split)
    return loss_sum / n, correct / n
