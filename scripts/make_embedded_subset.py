"""Write the small FashionMNIST subset shipped in the package (gnnopt/_data/).

    python scripts/make_embedded_subset.py [--src /usr/share/datasets/fashion-mnist]

Class-balanced and seeded: 600 train + 100 validation images per class from the official
training set (disjoint), 200 test images per class from the official test set. Images are
stored as uint8 (N, 1, 28, 28), labels as uint8, in a safetensors file that is gzipped
(reproducibly: no timestamp in the gzip header). The subset is for the offline demo and fast
tests; results are always reported on the full data set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gnnopt.bench.data import read_idx  # noqa: E402

PER_CLASS = {"train": 600, "val": 100, "test": 200}


def balanced_indices(labels: torch.Tensor, counts: list[int], gen: torch.Generator) -> list[torch.Tensor]:
    """For each count, that many indices per class; the groups are disjoint and sorted."""
    groups: list[list[torch.Tensor]] = [[] for _ in counts]
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        start = 0
        for g, n in enumerate(counts):
            if start + n > len(idx):
                raise ValueError(f"class {c} has only {len(idx)} images, {start + n} needed")
            groups[g].append(idx[start : start + n])
            start += n
    return [torch.cat(g).sort().values for g in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    default_out = REPO / "gnnopt" / "_data" / "fmnist_subset.safetensors.gz"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train_x = read_idx(args.src / "train-images-idx3-ubyte.gz")
    train_y = read_idx(args.src / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(args.src / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(args.src / "t10k-labels-idx1-ubyte.gz")

    gen = torch.Generator().manual_seed(args.seed)
    train_idx, val_idx = balanced_indices(train_y, [PER_CLASS["train"], PER_CLASS["val"]], gen)
    (test_idx,) = balanced_indices(test_y, [PER_CLASS["test"]], gen)

    tensors = {}
    for split, (x, y, idx) in {
        "train": (train_x, train_y, train_idx),
        "val": (train_x, train_y, val_idx),
        "test": (test_x, test_y, test_idx),
    }.items():
        tensors[f"{split}_x"] = x[idx].unsqueeze(1).contiguous()  # (N, 1, 28, 28) uint8
        tensors[f"{split}_y"] = y[idx].contiguous()  # (N,) uint8
    about = {
        "source": "FashionMNIST (Xiao et al. 2017), Debian dataset-fashion-mnist IDX files",
        "seed": args.seed,
        "per_class": PER_CLASS,
        "train_and_val_from": "official train set (disjoint)",
        "test_from": "official test set",
    }
    # One key: safetensors writes its metadata map in hash order, so several keys would make
    # the file differ from run to run.
    metadata = {"gnnopt_subset": json.dumps(about, sort_keys=True)}
    blob = gzip.compress(save(tensors, metadata=metadata), compresslevel=9, mtime=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    sizes = {k: tuple(v.shape) for k, v in tensors.items()}
    print(f"wrote {args.out} ({len(blob) / 1e6:.2f} MB): {sizes}")


if __name__ == "__main__":
    main()
