"""Data for the optimizee tasks: whole data sets as tensors, batches drawn by index.

:mod:`.sources` finds and reads the files, :mod:`.datasets` builds the normalised
train / validation / test splits, :mod:`.batches` draws mini-batches and evaluates.
"""
from .batches import BatchStream, evaluate
from .datasets import Dataset, Split, load_dataset, synthetic_cifar10
from .sources import DATA_ENV_VAR, NORMALIZATION, read_idx

__all__ = ["DATA_ENV_VAR", "NORMALIZATION", "BatchStream", "Dataset", "Split", "evaluate", "load_dataset",
           "read_idx", "synthetic_cifar10"]
