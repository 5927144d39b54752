"""gnnopt: learned optimizers over neural graphs, as drop-in torch optimizers."""
from ._version import __version__
from .hub import list_pretrained
from .optimizer import GNNOptimizer

__all__ = ["GNNOptimizer", "list_pretrained", "__version__"]
