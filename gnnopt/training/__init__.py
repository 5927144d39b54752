"""Meta-training of learned update rules (``python -m gnnopt.training``).

Imports gnnopt; gnnopt never imports this package.
"""
from .config import TrainConfig
from .trainer import MetaTrainer, meta_train

__all__ = ["MetaTrainer", "TrainConfig", "meta_train"]
