"""Data sources, splits, batch drawing and evaluation (SPEC section 6)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from gnnopt.bench.data import sources as data
from gnnopt.bench.data import BatchStream, Split, evaluate, load_dataset, read_idx, synthetic_cifar10

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
needs_debian = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(), reason=f"{DEBIAN_DIR} absent (apt-get install dataset-fashion-mnist)"
)


# ----------------------------------------------------------------------------- helpers


def _idx_bytes(t: torch.Tensor) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, t.dim()) + struct.pack(f">{t.dim()}I", *t.shape)
    return header + t.to(torch.uint8).numpy().tobytes()


def _write_fake_fmnist(folder: Path, n_train: int = 300, n_test: int = 50, gz: bool = True) -> None:
    """Tiny IDX files whose image i carries i in its first two pixels (to trace splits)."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.zeros(n, 28, 28, dtype=torch.uint8)
        idx = torch.arange(n)
        images[:, 0, 0] = (idx % 256).to(torch.uint8)
        images[:, 0, 1] = (idx // 256).to(torch.uint8)
        labels = (idx % 10).to(torch.uint8)
        for kind, t in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = _idx_bytes(t)
            name = f"{prefix}-{kind}"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


def _image_ids(split: Split) -> list[int]:
    """Recover the ids planted by _write_fake_fmnist from normalised images."""
    pixels = torch.round((split.x[:, 0, 0, :2] * FMNIST_STD + FMNIST_MEAN) * 255).long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No environment variable, system directory, cache or ./data can leak into a test."""
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "_SYSTEM_FMNIST_DIRS", ())
    monkeypatch.setattr(data, "_cache_root", lambda: tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- IDX / FashionMNIST


@needs_debian
def test_read_idx_on_debian_files() -> None:
    labels = read_idx(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10_000,) and labels.dtype == torch.uint8
    assert torch.bincount(labels.long()).tolist() == [1000] * 10
    images = read_idx(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert images.max() == 255


@needs_debian
def test_full_fmnist_from_debian_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    ds = load_dataset("fmnist")
    assert ds.source == str(DEBIAN_DIR) and ds.name == "fmnist"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.train.x.dtype == torch.float32
    assert ds.test.y.dtype == torch.int64
    # Normalised with the training set's constants: roughly zero mean, unit std.
    assert abs(ds.train.x.mean().item()) < 0.02 and abs(ds.train.x.std().item() - 1) < 0.02


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(torch.zeros(4, dtype=torch.uint8))[:-1])
    with pytest.raises(ValueError, match="expected 4"):
        read_idx(short)


@pytest.mark.parametrize("layout", ["", "fashion-mnist", "FashionMNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_folder_layouts_gzipped_or_not(isolated: Path, layout: str, gz: bool) -> None:
    root = isolated / "root"
    _write_fake_fmnist(root / layout if layout else root, gz=gz)
    ds = load_dataset("fmnist", root, val_size=100)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (200, 100, 50)
    assert _image_ids(ds.test) == list(range(50))  # the official test set, in order
    assert ds.test.y.tolist() == [i % 10 for i in range(50)]


def test_val_split_disjoint_and_fixed_by_seed(isolated: Path) -> None:
    _write_fake_fmnist(isolated / "d")
    a = load_dataset("fmnist", isolated / "d", val_size=100, seed=0)
    train_ids, val_ids = _image_ids(a.train), _image_ids(a.val)
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(300))
    assert torch.equal(a.train.y, torch.tensor(train_ids) % 10)  # labels follow their images
    b = load_dataset("fmnist", isolated / "d", val_size=100, seed=0)
    assert _image_ids(b.val) == val_ids
    c = load_dataset("fmnist", isolated / "d", val_size=100, seed=1)
    assert _image_ids(c.val) != val_ids


def test_env_var_and_torchvision_layout_in_cwd(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_fmnist(isolated / "data" / "FashionMNIST" / "raw")
    assert load_dataset("fmnist", val_size=10).source == str(Path.cwd() / "data" / "FashionMNIST" / "raw")
    _write_fake_fmnist(isolated / "envdir", n_train=40)
    monkeypatch.setenv(data.DATA_ENV_VAR, str(isolated / "envdir"))
    ds = load_dataset("fmnist", val_size=10)  # the env var comes before ./data
    assert ds.source == str(isolated / "envdir") and len(ds.train) == 30


def test_missing_data_says_how_to_get_it(isolated: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fmnist", isolated / "nowhere", download=False)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "nowhere" in message
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fmnist", download=False)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", isolated / "nowhere", download=False)


def test_bad_arguments(isolated: Path) -> None:
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="embedded"):
        load_dataset("cifar10", embedded=True)
    _write_fake_fmnist(isolated / "d")
    for bad in (-1, 300, 1.5):
        with pytest.raises(ValueError, match="val_size"):
            load_dataset("fmnist", isolated / "d", val_size=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- embedded subset


def test_embedded_subset() -> None:
    ds = load_dataset("fmnist", embedded=True, val_size=123)  # val_size does not apply
    assert "embedded" in ds.source and ds.name == "fmnist"
    for split, n in ((ds.train, 6000), (ds.val, 1000), (ds.test, 2000)):
        assert split.x.shape == (n, 1, 28, 28) and split.x.dtype == torch.float32
        assert split.y.shape == (n,) and split.y.dtype == torch.int64
        assert torch.bincount(split.y, minlength=10).tolist() == [n // 10] * 10
    assert abs(ds.train.x.mean().item()) < 0.05


# ----------------------------------------------------------------------------- CIFAR-10


def _write_fake_cifar(folder: Path, per_batch: int = 20, protocol: int = 2, old_numpy: bool = False) -> None:
    """Batches in the official format; ``old_numpy`` names numpy 1's module, as the real files do."""
    np = pytest.importorskip("numpy")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * per_batch,
        }
        raw = pickle.dumps(batch, protocol=protocol)
        if old_numpy:
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)


@pytest.mark.parametrize(("protocol", "old_numpy"), [(2, True), (2, False), (pickle.HIGHEST_PROTOCOL, False)])
def test_cifar10_batches(isolated: Path, protocol: int, old_numpy: bool) -> None:
    folder = isolated / "c" / "cifar-10-batches-py"
    _write_fake_cifar(folder, protocol=protocol, old_numpy=old_numpy)
    for where in (folder, folder.parent):
        ds = load_dataset("cifar10", where, val_size=30)
        assert ds.source == str(folder) and ds.name == "cifar10"
        assert (len(ds.train), len(ds.val), len(ds.test)) == (70, 30, 20)
        assert ds.train.x.shape[1:] == (3, 32, 32) and ds.train.y.dtype == torch.int64


def test_cifar10_reader_refuses_foreign_pickles(isolated: Path) -> None:
    folder = isolated / "cifar-10-batches-py"
    _write_fake_cifar(folder)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Path("x")}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", folder)


def test_synthetic_cifar10_is_labelled() -> None:
    ds = synthetic_cifar10(n_train=16, n_val=8, n_test=4, seed=1)
    assert "not a result" in ds.source
    assert ds.train.x.shape == (16, 3, 32, 32) and ds.test.y.shape == (4,)
    assert torch.equal(ds.train.x, synthetic_cifar10(16, 8, 4, seed=1).train.x)
    with pytest.raises(ValueError, match="n_train"):
        synthetic_cifar10(n_train=0)


# ----------------------------------------------------------------------------- batches, evaluation


@pytest.fixture(scope="module")
def small_split() -> Split:
    return Split(torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1), torch.arange(50) % 10)


def test_split_validates() -> None:
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(3))


def test_batch_stream_reproducible_and_epochs(small_split: Split) -> None:
    def draw(seed: int, n: int = 9) -> list[torch.Tensor]:
        stream = BatchStream(small_split, 16, torch.Generator().manual_seed(seed))
        return [stream.next()[0].flatten() for _ in range(n)]

    a, b, c = draw(0), draw(0), draw(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    stream = BatchStream(small_split, 16, torch.Generator().manual_seed(0))
    epoch = torch.cat([stream.next()[0].flatten() for _ in range(3)])  # 48 of 50, then a new epoch
    assert len(set(epoch.tolist())) == 48 and stream.epoch == 0
    x, y = stream.next()
    assert stream.epoch == 1 and x.shape == (16, 1, 1, 1)
    assert torch.equal(y, x.flatten().long() % 10)  # images and labels drawn together


def test_batch_stream_resumes(small_split: Split) -> None:
    stream = BatchStream(small_split, 7, torch.Generator().manual_seed(5))
    for _ in range(4):
        stream.next()
    state = stream.state_dict()
    expected = [stream.next()[1] for _ in range(10)]
    resumed = BatchStream(small_split, 7, torch.Generator())
    resumed.load_state_dict(state)
    assert all(torch.equal(e, resumed.next()[1]) for e in expected)


def test_batch_stream_follows_global_seed_and_validates(small_split: Split) -> None:
    torch.manual_seed(0)
    a = BatchStream(small_split, 10).next()[1]
    torch.manual_seed(0)
    assert torch.equal(a, BatchStream(small_split, 10).next()[1])
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(small_split, 51)
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(small_split, 0)


def test_evaluate_accuracy_and_mode() -> None:
    split = synthetic_cifar10(n_train=8, n_val=8, n_test=37).test
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 32 * 32, 10))
    model.train()
    loss, acc = evaluate(model, split, batch_size=10)
    assert 0.0 <= acc <= 1.0 and loss > 0 and model.training
    model.eval()
    assert evaluate(model, split, batch_size=1000) == pytest.approx((loss, acc))  # dropout was off
    assert not model.training
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.copy_(torch.arange(10.0))  # always predicts class 9
    _, acc9 = evaluate(model, split)
    assert acc9 == pytest.approx((split.y == 9).float().mean().item())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_and_same_batches() -> None:
    ds = load_dataset("fmnist", embedded=True, device="cuda")
    assert ds.train.x.is_cuda and ds.test.y.is_cuda
    cpu = ds.train.to("cpu")
    x_gpu, _ = BatchStream(ds.train, 32, torch.Generator().manual_seed(0)).next()
    x_cpu, _ = BatchStream(cpu, 32, torch.Generator().manual_seed(0)).next()
    assert torch.equal(x_gpu.cpu(), x_cpu)
