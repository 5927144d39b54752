"""Episodes: a fresh optimizee of a task, trained by the rule for a number of inner steps.

Every episode is seeded from ``(seed, outer step, episode, rank)``, so a resumed run draws
exactly the episodes the uninterrupted one would have.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from ..bench.data import BatchStream, Dataset
from ..bench.tasks import Task
from ..functional import Context, UpdateResult, init_momenta
from ..graph import NeuralGraph, build_neural_graph, infer_kinds
from ..rules import UpdateRule
from .config import TrainConfig


def episode_seed(seed: int, outer_step: int, episode: int, rank: int = 0) -> int:
    """A distinct, reproducible seed for every episode of every process."""
    return (seed * 1_000_003 + outer_step * 10_007 + episode * 101 + rank * 7_919_821) % (2**31 - 1)


@dataclass
class Optimizee:
    """A fresh optimizee: its module (used functionally), names, graph and batch stream."""

    model: nn.Module
    names: list[str]
    params: list[Tensor]
    graph: NeuralGraph
    stream: BatchStream

    def loss(self, params: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(functional_call(self.model, dict(zip(self.names, params)), (x,)), y)


def make_optimizee(task: Task, data: Dataset, seed: int, graph_options: dict[str, int], device) -> Optimizee:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.build_model()
    model.to(device)
    named = list(model.named_parameters())
    kinds = infer_kinds(model)
    names = [n for n, _ in named]
    graph = build_neural_graph(names, [p.shape for _, p in named], [kinds[n] for n in names], **graph_options)
    stream = BatchStream(data.train, task.batch_size, torch.Generator().manual_seed(seed))
    return Optimizee(model, names, [p.detach() for _, p in named], graph.to(device), stream)


def episode_task(tasks: list[Task], seed: int) -> Task:
    """The task an episode trains: one of ``tasks``, drawn from its seed."""
    if len(tasks) == 1:
        return tasks[0]
    return tasks[int(torch.randint(len(tasks), (), generator=torch.Generator().manual_seed(seed + 2)))]


def episode_length(cfg: TrainConfig, outer_step: int, seed: int) -> int:
    """``inner_steps``, or after ``random_inner_steps_after`` a length drawn from the range."""
    if cfg.random_inner_steps_after is None or outer_step < cfg.random_inner_steps_after:
        return cfg.inner_steps
    u = torch.rand((), generator=torch.Generator().manual_seed(seed + 1)).item()
    factor = cfg.random_inner_steps_min + u * (cfg.random_inner_steps_max - cfg.random_inner_steps_min)
    return max(1, int(cfg.inner_steps * factor))


@dataclass
class Episode:
    """An optimizee part-way through training by the rule: where it stands between inner steps.

    ``params``, ``momenta`` and ``rule_state`` are detached; ``done`` of ``length`` inner
    steps have run. An episode lives for one outer step, or across outer steps with
    ``segment_steps``.
    """

    optimizee: Optimizee
    seed: int
    length: int
    params: list[Tensor]
    momenta: list[Tensor]
    rule_state: dict[str, Tensor] | None
    done: int = 0
    task: str = ""
    context: Tensor | None = None  # with graph_every > 1: the context the next steps may read

    @classmethod
    def start(cls, rule: UpdateRule, optimizee: Optimizee, seed: int, length: int, task: str = "") -> Episode:
        params = optimizee.params
        return cls(optimizee, seed, length, params, [init_momenta(p) for p in params],
                   rule.init_state(optimizee.graph, params[0].device), task=task)

    @property
    def finished(self) -> bool:
        return self.done >= self.length


def reused_context(cfg: TrainConfig, step: int, table: Tensor | None) -> Context | None:
    """The context that the inner step at episode position ``step`` reads instead of running
    the rule's graph part (``graph_every`` > 1, between graph steps), as ``GNNOptimizer`` does."""
    if cfg.graph_every > 1 and table is not None and step % cfg.graph_every:
        return Context(table)
    return None


def kept_context(cfg: TrainConfig, result: UpdateResult) -> Tensor | None:
    """The context table to keep for the next steps (none when the graph runs every step)."""
    return result.context.table if cfg.graph_every > 1 else None


def detach_state(state):
    return None if state is None else {k: v.detach() for k, v in state.items()}
