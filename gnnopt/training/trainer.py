"""Meta-training: episodes of the learned update on fresh optimizees, meta-updates of the rule.

Every inner step calls :func:`gnnopt.functional.learned_update`, the same pure function as
``GNNOptimizer.step``; only the grad mode differs. Objectives (SPEC section 5):

* ``greedy``: after each inner step, the loss of the updated optimizee on the same batch
  is added to the meta-loss; the optimizee is detached after every step.
* ``tbptt``: the meta-loss is the mean loss over ``unroll`` consecutive inner steps, each
  measured on the batch after the update; gradients flow back through the whole unroll
  (through the parameters and the updates; with ``second_order`` also through the
  gradient features, which first-order truncations ignore).

Every episode is seeded from ``(seed, outer step, episode, rank)``, so a resumed run draws
exactly the episodes the uninterrupted one would have, and the rule's weights, the
AdamW state and the step counter are all the state there is.
"""
from __future__ import annotations

import functools
import json
import math
import signal
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as recomputed

from ..data import BatchStream, Dataset, load_dataset
from ..functional import init_momenta, learned_update
from ..graph import NeuralGraph, build_neural_graph, infer_kinds
from ..rules import UpdateRule, create
from ..rules.base import Head
from ..tasks import Task, get_task
from . import checkpoint
from .config import TrainConfig
from .distributed import DistContext


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

    @classmethod
    def start(cls, rule: UpdateRule, optimizee: Optimizee, seed: int, length: int, task: str = "") -> Episode:
        params = optimizee.params
        return cls(optimizee, seed, length, params, [init_momenta(p) for p in params],
                   rule.init_state(optimizee.graph, params[0].device), task=task)

    @property
    def finished(self) -> bool:
        return self.done >= self.length


def _trained_parameters(rule: UpdateRule, modules: list[str]) -> list[torch.nn.Parameter]:
    """The parameters meta-training updates: all of ``rule``'s, or those under ``modules``
    (``train_only``); the others stop requiring gradients, so none are computed for them."""
    if not modules:
        return list(rule.parameters())
    under = {m: [p for n, p in rule.named_parameters() if n == m or n.startswith(m + ".")] for m in modules}
    missing = [m for m, params in under.items() if not params]
    if missing:
        tops = sorted({n.split(".")[0] for n, _ in rule.named_parameters()})
        raise ValueError(f"Invalid train_only: rule {rule.name!r} has no parameters under {', '.join(missing)} "
                         f"(its modules: {', '.join(tops)})")
    trained = {id(p): p for params in under.values() for p in params}
    for param in rule.parameters():
        param.requires_grad_(id(param) in trained)
    return list(trained.values())


def run_segment(rule: UpdateRule, ep: Episode, cfg: TrainConfig, steps: int, weight: float, *,
                pipeline: bool | None = None, recompute: bool = False) -> float:
    """Advance ``ep`` by ``steps`` inner steps, back-propagating ``weight *`` their mean
    meta-loss into the rule's ``.grad``. Returns that mean meta-loss (a float, for logging).

    With the ``greedy`` objective, ``pipeline`` (default: the rule's ``pipeline_backward``)
    and a CPU with two or more threads, each backward runs beside the next forward
    (:class:`BackwardPipeline`); the gradients are the same up to float rounding.

    With ``tbptt``, ``recompute`` keeps only each inner step's inputs to the rule and runs
    the rule's forward again during the backward (activation checkpointing), instead of
    holding every step's rule activations until the truncation's backward. The rule's
    activations dominate a truncation's memory, so this makes long unrolls fit, for about
    one more rule forward per step; the gradients are the same up to float rounding
    (``benchmarks/recompute.py`` measures both).

    With ``es``, nothing is back-propagated through the steps: see :func:`_es_segment`.
    """
    opt, params, momenta, state = ep.optimizee, ep.params, ep.momenta, ep.rule_state
    total, count = 0.0, 0
    pipeline = rule.pipeline_backward if pipeline is None else pipeline
    if cfg.objective == "greedy":
        with BackwardPipeline(params[0].device, enabled=pipeline) as backward:
            for _ in range(steps):
                batch = opt.stream.next()
                leaves = [p.requires_grad_() for p in params]
                grads = torch.autograd.grad(opt.loss(leaves, batch), leaves)
                result = learned_update(rule, opt.graph, params, grads, momenta, state)
                new = [p.detach() + u for p, u in zip(params, result.updates)]
                meta = opt.loss(new, batch)
                backward(meta * (weight / steps))
                total, count = total + meta.item(), count + 1
                params = [p.detach() for p in new]
                momenta = result.momenta
                state = _detach(result.rule_state)
    elif cfg.objective == "es":
        total, (params, momenta, state) = _es_segment(rule, ep, cfg, steps, weight)
        count = 1
    else:  # tbptt: truncations of `unroll` steps; each step's loss is on its next batch
        # (no pipeline: a truncation's backward beside the next one's forward measured slower)
        update = functools.partial(recomputed, learned_update, use_reentrant=False) if recompute else learned_update
        done = 0
        batch = opt.stream.next()
        while done < steps:
            length = min(cfg.unroll, steps - done)
            current = [p.detach().requires_grad_() for p in params]
            metas = []
            for t in range(length):
                loss = opt.loss(current, batch)
                if t > 0:
                    metas.append(loss)  # loss of the previous update, measured on a new batch
                grads = torch.autograd.grad(loss, current, retain_graph=t > 0 or cfg.second_order,
                                            create_graph=cfg.second_order)
                result = update(rule, opt.graph, current, grads, momenta, state, second_order=cfg.second_order)
                current = [p + u for p, u in zip(current, result.updates)]
                momenta, state = result.momenta, result.rule_state
                batch = opt.stream.next()
            metas.append(opt.loss(current, batch))
            meta = torch.stack(metas).mean()
            (meta * (weight * length / steps)).backward()
            total, count = total + meta.item() * length, count + length
            params = [p.detach() for p in current]
            momenta = [m.detach() for m in momenta]
            state = _detach(state)
            done += length
    ep.params, ep.momenta, ep.rule_state = [p.detach() for p in params], [m.detach() for m in momenta], state
    ep.done += steps
    return total / max(count, 1)


def _rollout(rule: UpdateRule, ep: Episode, batches: list[tuple[Tensor, Tensor]]):
    """Run ``len(batches) - 1`` inner steps from ``ep``'s state without a graph through the
    rule; returns the meta-losses (each update's loss on the next batch) and the end state."""
    opt, params, momenta, state = ep.optimizee, ep.params, ep.momenta, ep.rule_state
    losses = []
    for t in range(len(batches) - 1):
        leaves = [p.detach().requires_grad_() for p in params]
        grads = torch.autograd.grad(opt.loss(leaves, batches[t]), leaves)
        with torch.no_grad():
            result = learned_update(rule, opt.graph, [p.detach() for p in leaves], grads, momenta, state)
            params = [p.detach() + u for p, u in zip(leaves, result.updates)]
            momenta, state = result.momenta, result.rule_state
            losses.append(opt.loss(params, batches[t + 1]).item())
    return losses, (params, momenta, state)


def _es_segment(rule: UpdateRule, ep: Episode, cfg: TrainConfig, steps: int, weight: float):
    """The ``es`` objective for one segment: antithetic Gaussian perturbations of the trained
    parameters, each pair run on the same batches from the same state, and ``weight *`` the
    estimated meta-gradient added to their ``.grad``. Then the segment is run once more with
    the parameters as they are, to advance the episode; returns that run's mean meta-loss
    and end state. With ``cfg.es_tail``, the perturbed runs are scored on their last steps only.
    The draws are seeded by the episode and its position, so a resumed run repeats them."""
    batches = [ep.optimizee.stream.next() for _ in range(steps + 1)]
    trained = [p for p in rule.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed((ep.seed * 1_000_003 + ep.done) % 2**62)
    centre = [p.detach().clone() for p in trained]
    scale = weight / (2 * cfg.es_sigma * cfg.es_pairs)
    for _ in range(cfg.es_pairs):
        noise = [torch.randn(p.shape, generator=gen).to(p) for p in trained]
        losses = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, c, n in zip(trained, centre, noise):
                    p.copy_(c + sign * cfg.es_sigma * n)
            run = _rollout(rule, ep, batches)[0]
            tail = run[-cfg.es_tail:] if cfg.es_tail is not None else run
            losses.append(sum(tail) / len(tail))
        for p, n in zip(trained, noise):
            step = n * ((losses[0] - losses[1]) * scale)
            p.grad = step if p.grad is None else p.grad.add_(step)
    with torch.no_grad():
        for p, c in zip(trained, centre):
            p.copy_(c)
    run, end = _rollout(rule, ep, batches)
    return sum(run) / len(run), end


def run_episode(rule: UpdateRule, opt: Optimizee, cfg: TrainConfig, steps: int, weight: float, *,
                pipeline: bool | None = None, recompute: bool = False) -> float:
    """Run one whole ``steps``-step episode on a fresh ``opt`` (see :func:`run_segment`)."""
    return run_segment(rule, Episode.start(rule, opt, 0, steps), cfg, steps, weight, pipeline=pipeline,
                       recompute=recompute)


class BackwardPipeline:
    """Runs each meta-loss's backward on a second thread while the next forward goes on.

    An inner step's backward through the rule only accumulates into the rule's ``.grad``;
    the next inner step's forward needs the updated parameters, not that gradient. So on a
    CPU with two or more intra-op threads, the backward of step t runs beside the forward
    of step t + 1, each with half of the threads: on task 17 the two halves take about as
    long as each other, and a step about as long as the longer one. Backwards still run one
    at a time and in order, so ``.grad`` accumulates exactly as it would without the
    pipeline. Elsewhere (CUDA, where kernels already run asynchronously, or one thread) and
    with ``enabled=False`` it calls ``backward()`` in place.

    Use as a context manager; call the instance with each loss. Leaving the block waits for
    the last backward and re-raises any error from the worker.
    """

    def __init__(self, device: torch.device, *, enabled: bool = True) -> None:
        self.threads = torch.get_num_threads()
        self.enabled = enabled and torch.device(device).type == "cpu" and self.threads >= 2
        self._pending: Future | None = None

    def __enter__(self) -> BackwardPipeline:
        if self.enabled:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gnnopt-backward")
            torch.set_num_threads(self.threads // 2)
        return self

    def __call__(self, loss: Tensor) -> None:
        if not self.enabled:
            loss.backward()
            return
        self._wait()  # one graph in flight at most, and backwards in order
        self._pending = self._pool.submit(loss.backward)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises the backward's exception here

    def __exit__(self, *exc) -> None:
        if self.enabled:
            try:
                self._wait()
            finally:
                self._pool.shutdown(wait=True)
                torch.set_num_threads(self.threads)


def _detach(state):
    return None if state is None else {k: v.detach() for k, v in state.items()}


class MetaTrainer:
    """Runs (or resumes) a meta-training run into ``out_dir``.

    Files: ``config.json``, ``model.safetensors`` (the latest rule, loadable with
    ``GNNOptimizer.from_pretrained``), ``metrics.jsonl``, ``best/`` (selected on the
    validation split), ``trainer_state.safetensors`` + ``trainer_state.json`` (resume).
    ``pipeline`` chooses whether greedy inner steps run their backward beside the next
    forward on CPU (``None``: the rule's ``pipeline_backward``; see :func:`run_segment`).
    ``recompute`` trades time for memory in tbptt truncations (see :func:`run_segment`).
    Neither changes the result, so neither is stored in ``config.json``.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, device: str | torch.device = "cpu",
                 data_dir: str | None = None, data: Dataset | None = None, progress: bool = True,
                 pipeline: bool | None = None, recompute: bool = False) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.recompute = recompute
        self.out = Path(out_dir)
        self.dist = DistContext.from_env(device)
        self.device = self.dist.device
        self.tasks = [get_task(name) for name in cfg.task_names]
        self.task = self.tasks[0]
        if len({task.dataset for task in self.tasks}) > 1:
            raise ValueError(f"Invalid task {cfg.task!r}: the tasks of one run must share a data set, "
                             f"got {', '.join(f'{t.name} ({t.dataset})' for t in self.tasks)}")
        self.data = data if data is not None else load_dataset(
            self.task.dataset, data_dir, device=self.device, embedded=cfg.embedded)
        # the test split stays where it is: meta-training never reads it
        self.data = Dataset(self.data.train.to(self.device), self.data.val.to(self.device), self.data.test,
                            self.data.name, self.data.source)
        torch.manual_seed(cfg.seed)
        self.rule = _initial_rule(cfg).to(self.device)
        self.meta_opt = torch.optim.AdamW(_trained_parameters(self.rule, cfg.trained_modules), lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.progress = progress and self.dist.is_main
        self.episodes: list[Episode | None] = [None] * cfg.meta_batch_size
        if cfg.segment_steps is not None and self.dist.world_size > 1:
            raise ValueError("segment_steps (persistent episodes) runs in one process only; "
                             "use --meta-batch-size for more episodes per meta-update")

    # ------------------------------------------------------------------ schedule
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        span = max(1, cfg.outer_steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / span))

    # ------------------------------------------------------------------ run
    def resume(self) -> None:
        """Load the stored state of a run directory; the stored config must match."""
        stored = TrainConfig.normalize(checkpoint.read_config(self.out))
        if stored != self.cfg.to_dict():
            diff = {k: (stored.get(k), v) for k, v in self.cfg.to_dict().items() if stored.get(k) != v}
            raise ValueError(f"{self.out / 'config.json'}: the run was started with other options: {diff}")
        self.step, self.best, episodes = checkpoint.load_trainer_state(self.out, self.rule, self.meta_opt,
                                                                        self.device)
        self._restore_episodes(*episodes)

    def outer_step(self) -> dict[str, Any]:
        cfg = self.cfg
        start = time.perf_counter()
        self.rule.train()
        self.meta_opt.zero_grad(set_to_none=False)
        losses, lengths, positions, tasks = [], [], [], []
        weight = 1.0 / (cfg.meta_batch_size * self.dist.world_size)
        for e in range(cfg.meta_batch_size):
            ep = self.episodes[e]
            if ep is None or ep.finished:
                ep = self.episodes[e] = self._new_episode(e, first=ep is None)
            steps = min(cfg.segment_steps or ep.length, ep.length - ep.done)
            positions.append(ep.done)
            tasks.append(ep.task)
            losses.append(run_segment(self.rule, ep, cfg, steps, weight, pipeline=self.pipeline,
                                      recompute=self.recompute))
            lengths.append(steps)
            if cfg.segment_steps is None:
                self.episodes[e] = None  # a fresh episode every outer step
        self.dist.all_reduce_grads(self.rule)
        grad_norm = _grad_norm(self.rule)
        finite = math.isfinite(grad_norm)
        if finite and cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.rule.parameters(), cfg.clip)
        lr = self.lr_at(self.step)
        for group in self.meta_opt.param_groups:
            group["lr"] = lr
        if finite:  # a non-finite meta-gradient never reaches the rule
            self.meta_opt.step()
        self.step += 1
        return {
            "step": self.step,
            "meta_loss": self.dist.mean(sum(losses) / len(losses)),
            "inner_steps": lengths,
            **({"episode_step": positions} if cfg.segment_steps else {}),
            **({"task": tasks} if len(self.tasks) > 1 else {}),
            "grad_norm": grad_norm,
            "skipped": not finite,
            "lr": lr,
            "seconds": round(time.perf_counter() - start, 3),
        }

    def _save_state(self) -> None:
        checkpoint.save_trainer_state(self.out, self.rule, self.cfg, self.meta_opt, self.step, self.best,
                                      self._episode_state() if self.cfg.segment_steps else None)

    def _episode_state(self) -> tuple[dict[str, Tensor], list[dict[str, Any] | None]]:
        """The running episodes as tensors + JSON: parameters, momenta, rule state and the
        batch stream's position, enough to rebuild them exactly on resume."""
        tensors: dict[str, Tensor] = {}
        info: list[dict[str, Any] | None] = []
        for e, ep in enumerate(self.episodes):
            if ep is None:
                info.append(None)
                continue
            stream = ep.optimizee.stream.state_dict()
            tensors.update({f"{e}.param.{i}": p for i, p in enumerate(ep.params)})
            tensors.update({f"{e}.momenta.{i}": m for i, m in enumerate(ep.momenta)})
            tensors.update({f"{e}.rule_state.{k}": v for k, v in (ep.rule_state or {}).items()})
            tensors[f"{e}.generator"] = stream["generator"]
            if stream["perm"] is not None:
                tensors[f"{e}.perm"] = stream["perm"]
            info.append({"seed": ep.seed, "task": ep.task, "length": ep.length, "done": ep.done,
                         "epoch": stream["epoch"], "pos": stream["pos"], "rule_state": ep.rule_state is not None})
        return tensors, info

    def _restore_episodes(self, tensors: dict[str, Tensor], info: list[dict[str, Any] | None] | None) -> None:
        if not self.cfg.segment_steps:
            return
        if info is None or len(info) != self.cfg.meta_batch_size:
            raise ValueError(f"{self.out}: the saved state has no running episodes to resume")
        for e, item in enumerate(info):
            if item is None:
                continue
            task = get_task(item["task"])
            optimizee = make_optimizee(task, self.data, item["seed"], self.rule.graph_options, self.device)
            n = len(optimizee.params)
            ep = Episode(optimizee, item["seed"], item["length"],
                         [tensors[f"{e}.param.{i}"] for i in range(n)],
                         [tensors[f"{e}.momenta.{i}"] for i in range(n)],
                         {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{e}.rule_state.")}
                         if item["rule_state"] else None,
                         item["done"], task.name)
            optimizee.stream.load_state_dict({"generator": tensors[f"{e}.generator"].cpu(), "epoch": item["epoch"],
                                              "perm": tensors.get(f"{e}.perm"), "pos": item["pos"]})
            self.episodes[e] = ep

    def _new_episode(self, slot: int, first: bool) -> Episode:
        """A fresh optimizee for meta-batch ``slot``, seeded from the outer step. With
        persistent episodes, the first ones of a meta-batch end at staggered lengths."""
        cfg = self.cfg
        seed = episode_seed(cfg.seed, self.step, slot, self.dist.rank)
        task = episode_task(self.tasks, seed)
        optimizee = make_optimizee(task, self.data, seed, self.rule.graph_options, self.device)
        length = episode_length(cfg, self.step, seed)
        if first and cfg.segment_steps is not None:
            length = max(1, length * (slot + 1) // cfg.meta_batch_size)
        return Episode.start(self.rule, optimizee, seed, length, task.name)

    def validate(self) -> dict[str, Any]:
        """Run the rule on ``eval_seeds`` fixed fresh optimizees of every task of the run; mean
        validation loss/accuracy (and, with several tasks, the accuracy of each)."""
        from ..eval import run_learned_episode

        self.rule.eval()
        by_task = {}
        for task in self.tasks:
            runs = [
                run_learned_episode(self.rule, task, self.data, steps=self.cfg.selection_steps,
                                    seed=episode_seed(self.cfg.seed, 0, 0, 0) + 12_345 + i, split="val")
                for i in range(self.cfg.eval_seeds)
            ]
            by_task[task.name] = {key: sum(run[key] for run in runs) / len(runs) for key in ("loss", "accuracy")}
        result = {key: sum(v[key] for v in by_task.values()) / len(by_task) for key in ("loss", "accuracy")}
        if len(by_task) > 1:
            result["by_task"] = {name: v["accuracy"] for name, v in by_task.items()}
        return result

    def train(self) -> UpdateRule:
        cfg = self.cfg
        if self.dist.is_main:
            checkpoint.write_checkpoint(self.out, self.rule, cfg, self.step)
        if self.step == 0 and self.best is None and cfg.init is not None:
            # a fine-tune's starting rule competes for selection: best/ is never worse than it
            record = {"step": 0, **self._select()}
            if self.dist.is_main:
                checkpoint.append_metrics(self.out, record)
        bar = _progress(cfg.outer_steps, self.step, self.progress)
        interrupted = _InterruptFlag()
        skipped = SkipWatch()
        try:
            while self.step < cfg.outer_steps:
                record = self.outer_step()
                skipped.add(record["skipped"])
                if self.step % cfg.eval_every == 0 or self.step == cfg.outer_steps:
                    record.update(self._select())
                if self.dist.is_main:
                    checkpoint.append_metrics(self.out, record)
                    if self.step % cfg.save_every == 0 or self.step == cfg.outer_steps or interrupted:
                        self._save_state()
                bar.update(1)
                bar.set_postfix(_postfix(record, self.best))
                if interrupted:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if self.dist.is_main:
                self._save_state()
                print(f"\ninterrupted: state saved at outer step {self.step}; continue with --resume")
            raise
        finally:
            interrupted.restore()
            bar.close()
        return self.rule

    def _select(self) -> dict[str, Any]:
        """Validate on the main process and keep the best rule (never reads the test set)."""
        if not self.dist.is_main:
            return {}
        start = time.perf_counter()
        val = self.validate()
        record = {"val_loss": val["loss"], "val_acc": val["accuracy"],
                  **({"val_acc_by_task": val["by_task"]} if "by_task" in val else {}),
                  "val_seconds": round(time.perf_counter() - start, 3)}
        if self.best is None or val["accuracy"] > self.best["val_acc"]:
            self.best = {"step": self.step, **record}
            checkpoint.save_best(self.out, self.rule, self.cfg, self.best)
        return record


class _InterruptFlag:
    """Turns the first Ctrl-C into a flag checked between outer steps (state is saved first)."""

    def __init__(self) -> None:
        self.hit = False
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._old = None

    def _handler(self, signum, frame) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __bool__(self) -> bool:
        return self.hit

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _initial_rule(cfg: TrainConfig) -> UpdateRule:
    """A fresh rule of ``cfg.rule``, or the saved rule ``cfg.init`` (which must be of that kind),
    with its head taken from the saved rule ``cfg.init_head`` when that is set.

    With ``cfg.init``, options missing from ``cfg.rule_config`` take the saved rule's values, so
    a fine-tune needs no repeat of them; an option given explicitly must match the saved rule.
    The saved rule may lack :attr:`~gnnopt.rules.UpdateRule.optional` options that this run
    turns on (e.g. ``pna``'s ``step_head_gain``): its weights are then loaded into the fresh
    rule, whose added modules keep their initialisation (zero: the same function at first).
    """
    from ..hub import load_rule

    saved = load_rule(cfg.init) if cfg.init is not None else None
    defaults = saved.config if saved is not None and saved.name == cfg.rule else {}
    fresh = create(cfg.rule, **{**defaults, **cfg.rule_config})
    rule = fresh
    if saved is not None:
        rule = saved
        added = {k for k in set(fresh.config) - set(rule.config) if k in fresh.optional}
        if rule.name != cfg.rule or {k: v for k, v in fresh.config.items() if k not in added} != rule.config:
            raise ValueError(
                f"--init {cfg.init}: a {rule.name} rule with {rule.config}, but this run trains a "
                f"{cfg.rule} rule with {fresh.config}"
            )
        if added:
            missing, unexpected = fresh.load_state_dict(rule.state_dict(), strict=False)
            if unexpected:  # cannot happen while an added option only adds modules
                raise ValueError(f"--init {cfg.init}: weights {unexpected} have no place in {fresh.config}")
            print(f"--init {cfg.init}: options {sorted(added)} added; new weights {missing} start at their initialisation")
            rule = fresh
    if cfg.init_head is not None:
        transplant_head(load_rule(cfg.init_head).head, rule.head, label=cfg.init_head)
    return rule


@torch.no_grad()
def transplant_head(source: Head, target: Head, *, label: str = "the source rule") -> None:
    """Make ``target`` compute what ``source`` does, ignoring its graph embedding.

    The heads must have the same hidden sizes; ``target``'s embedding columns of its first
    layer are zeroed (the own-feature columns and every later layer are copied), so the
    embedding only enters once meta-training moves those columns.
    """
    if len(source.net) != len(target.net) or any(
        a.weight.shape[0] != b.weight.shape[0] for a, b in zip(source.net[::2], target.net[::2])
    ):
        raise ValueError(f"--init-head {label}: its head ({source.net}) does not match this rule's ({target.net})")
    first = target.net[0]
    first.weight.zero_()
    first.weight[:, target.embed_dim:] = source.net[0].weight[:, source.embed_dim:]
    first.bias.copy_(source.net[0].bias)
    for a, b in zip(source.net[2::2], target.net[2::2]):
        b.load_state_dict(a.state_dict())


def _grad_norm(module: nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="meta-training", unit="outer")


class SkipWatch:
    """Warns, once per run, when most recent meta-gradients were non-finite and skipped.

    A skipped update is safe (the rule is unchanged), but a run that skips most of them
    is not training: its truncations are too long for a stable meta-gradient (the norms of
    second-order gradients grow with the unroll until they overflow).
    """

    def __init__(self, window: int = 20) -> None:
        self.recent: deque[bool] = deque(maxlen=window)
        self.warned = False

    def add(self, skipped: bool) -> None:
        self.recent.append(skipped)
        if not self.warned and len(self.recent) == self.recent.maxlen and 2 * sum(self.recent) > len(self.recent):
            self.warned = True
            warnings.warn(f"{sum(self.recent)} of the last {len(self.recent)} meta-gradients were non-finite and "
                          "skipped: the rule is barely training. Try a shorter --unroll or --segment-steps, "
                          "or a lower --lr.", RuntimeWarning, stacklevel=2)


def _postfix(record: dict[str, Any], best: dict[str, Any] | None) -> dict[str, str]:
    out = {"meta_loss": f"{record['meta_loss']:.3f}"}
    if "val_acc" in record:
        out["val_acc"] = f"{record['val_acc']:.3f}"
    if best:
        out["best"] = f"{best['val_acc']:.3f}@{best['step']}"
    return out


def meta_train(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, **kwargs: Any) -> UpdateRule:
    """Meta-train (or resume) a rule; returns it. See :class:`MetaTrainer`."""
    trainer = MetaTrainer(cfg, out_dir, **kwargs)
    if resume:
        trainer.resume()
    elif (Path(out_dir) / checkpoint.STATE_JSON).exists():
        raise FileExistsError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    try:
        return trainer.train()
    finally:
        trainer.dist.close()


def summary(out_dir: str | Path) -> str:
    best = json.loads((Path(out_dir) / checkpoint.STATE_JSON).read_text()).get("best")
    return f"best validation accuracy {best['val_acc']:.4f} at outer step {best['step']}" if best else "no evaluation yet"
