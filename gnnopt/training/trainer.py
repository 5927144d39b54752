"""The meta-training loop: episodes of the learned update on fresh optimizees, meta-updates
of the rule, validation and selection, checkpoints and exact resume.

The rule's weights, the AdamW state, the step counter and (with persistent episodes) the
running episodes are all the state there is; every episode is seeded from its position.
"""
from __future__ import annotations

import json
import math
import signal
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..bench.data import Dataset, load_dataset
from ..bench.protocol import run_learned_episode
from ..bench.tasks import get_task
from ..rules import UpdateRule
from . import checkpoint
from .config import RESUMABLE, TrainConfig
from .distributed import DistContext
from .episodes import Episode, episode_length, episode_seed, episode_task, make_optimizee
from .init import initial_rule, trained_parameters
from .objectives import run_segment


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
        self.rule = initial_rule(cfg).to(self.device)
        self.meta_opt = torch.optim.AdamW(trained_parameters(self.rule, cfg.trained_modules), lr=cfg.lr,
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
        """Load the stored state of a run directory; the stored config must match, but for the
        :data:`~gnnopt.training.config.RESUMABLE` options (e.g. more outer steps)."""
        stored = TrainConfig.normalize(checkpoint.read_config(self.out))
        diff = {k: (stored.get(k), v) for k, v in self.cfg.to_dict().items()
                if k not in RESUMABLE and stored.get(k) != v}
        if diff:
            raise ValueError(f"{self.out / 'config.json'}: the run was started with other options: {diff}")
        self.step, self.best, episodes = checkpoint.load_trainer_state(self.out, self.rule, self.meta_opt,
                                                                        self.device)
        if self.step > self.cfg.outer_steps:
            raise ValueError(f"{self.out}: the run is already at outer step {self.step}; outer_steps "
                             f"{self.cfg.outer_steps} would shorten it (give more to extend it)")
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
            if ep.context is not None:
                tensors[f"{e}.context"] = ep.context
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
                         item["done"], task.name, tensors.get(f"{e}.context"))
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
        self.rule.eval()
        by_task = {}
        for task in self.tasks:
            runs = [
                run_learned_episode(self.rule, task, self.data, steps=self.cfg.selection_steps,
                                    seed=episode_seed(self.cfg.seed, 0, 0, 0) + 12_345 + i, split="val",
                                    graph_every=self.cfg.graph_every)
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
