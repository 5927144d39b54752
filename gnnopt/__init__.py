"""gnnopt: learned optimizers over neural graphs, as drop-in torch optimizers."""
__version__ = "0.1.0"

from .hub import list_pretrained  # noqa: E402
from .optimizer import GNNOptimizer  # noqa: E402

__all__ = ["GNNOptimizer", "list_pretrained", "__version__"]
