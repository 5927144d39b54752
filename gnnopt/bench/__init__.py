"""The benchmark harness: the paper's evaluation protocol around the optimizer core.

:mod:`.tasks` (the optimizee CNNs), :mod:`.data` (data sets as tensors, batches),
:mod:`.baselines` (hand-designed optimizers), :mod:`.protocol` (train, evaluate, tune on
validation), :mod:`.store` (finished runs, for resuming sweeps), :mod:`.report` (tables,
plots) and :mod:`.cli` (``python -m gnnopt.eval``). It imports the core (``gnnopt.optimizer``,
``gnnopt.rules``); the core never imports it.
"""
from .protocol import compare, run_learned_episode, train_optimizee, tune_lr, tune_rule_lr
from .tasks import Task, get_task, list_tasks

__all__ = ["Task", "compare", "get_task", "list_tasks", "run_learned_episode", "train_optimizee", "tune_lr",
           "tune_rule_lr"]
