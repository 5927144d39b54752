"""Meta-training of learned update rules (``python -m gnnopt.training``).

:mod:`.config` (the run's options; the CLI flags are generated from it), :mod:`.episodes`
(optimizees and their inner steps), :mod:`.objectives` (greedy, tbptt, es: one module each),
:mod:`.trainer` (the outer loop, selection, resume), :mod:`.init` (fine-tunes, head
transplants), :mod:`.checkpoint` (run-directory files), :mod:`.distributed` (torchrun),
:mod:`.pipeline` (a CPU speed-up), :mod:`.recipe` and :mod:`.card` (shipped checkpoints).
Imports the core and the benchmark harness; neither imports this package.
"""
from .config import TrainConfig
from .trainer import MetaTrainer, meta_train

__all__ = ["MetaTrainer", "TrainConfig", "meta_train"]
