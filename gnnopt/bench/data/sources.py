"""Where the data sets are found and how their files are read (IDX, CIFAR-10 pickles).

FashionMNIST is looked for, in order:

1. ``data_dir`` when given (only there: an explicit directory is never second-guessed);
2. the ``GNNOPT_DATA`` environment variable;
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package);
4. the torchvision layout ``<root>/FashionMNIST/raw`` under ``./data`` and the gnnopt cache;
5. a torchvision download, where torchvision is installed and the network allows.

In each directory the four IDX files (gzipped or not) may sit in ``dir``,
``dir/fashion-mnist`` or ``dir/FashionMNIST/raw``. CIFAR-10 reads the standard
``cifar-10-batches-py`` folder (pass the folder or its parent). The splits built from
them are :mod:`.datasets`'.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
