"""Run-directory files, all written atomically, none pickled.

``config.json`` (options), ``model.safetensors`` (latest rule), ``metrics.jsonl`` (one JSON
line per outer step), ``best/`` (the rule selected on the validation split, a checkpoint
directory like ``pretrained/<name>/``), ``trainer_state.safetensors`` (AdamW moments) and
``trainer_state.json`` (outer step, best record, AdamW step counts).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from safetensors.torch import load_file, save_file

from ..hub import atomic_write
from ..rules import UpdateRule
from .config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def write_checkpoint(out: Path, rule: UpdateRule, cfg: TrainConfig, step: int) -> None:
    """``config.json`` (the rule's config plus the training options) and the latest weights:
    the run directory itself loads with ``GNNOptimizer.from_pretrained``."""
    rule.save_pretrained(out, extra={"training": cfg.to_dict(), "outer_step": step})


def read_config(out: Path) -> dict[str, Any]:
    path = out / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run to resume here")
    try:
        return json.loads(path.read_text())["training"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not a gnnopt training config ({err})") from err


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    with open(out / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def save_trainer_state(out: Path, rule: UpdateRule, cfg: TrainConfig, meta_opt: torch.optim.Optimizer,
                       step: int, best: dict[str, Any] | None,
                       episodes: tuple[dict[str, Tensor], list[Any]] | None = None) -> None:
    """Latest rule + everything needed to resume exactly, including the ``episodes`` still
    running (tensors, JSON) with persistent episodes. The JSON is written last, so a crash
    mid-save leaves the previous consistent state readable."""
    write_checkpoint(out, rule, cfg, step)
    tensors, steps = {}, {}
    params = list(rule.parameters())
    for i, p in enumerate(params):
        state = meta_opt.state.get(p)
        if state:
            tensors[f"{i}.exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
            tensors[f"{i}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
            steps[str(i)] = float(state["step"])
    rule_weights = {f"rule.{k}": v.detach().cpu().contiguous() for k, v in rule.state_dict().items()}
    episode_tensors, episode_info = episodes or ({}, None)
    episode_tensors = {f"episode.{k}": v.detach().cpu().contiguous() for k, v in episode_tensors.items()}
    atomic_write(out / STATE_TENSORS, lambda p: save_file({**tensors, **rule_weights, **episode_tensors}, p))
    payload = {"outer_step": step, "best": best, "adam_steps": steps}
    if episode_info is not None:
        payload["episodes"] = episode_info
    atomic_write(out / STATE_JSON, lambda p: Path(p).write_text(json.dumps(payload, indent=2) + "\n"))
    _truncate_metrics(out, step)


def load_trainer_state(out: Path, rule: UpdateRule, meta_opt: torch.optim.Optimizer,
                       device: torch.device) -> tuple[int, dict[str, Any] | None, tuple[dict[str, Tensor], list[Any]]]:
    """``(outer step, best, (episode tensors, episode JSON))`` of a saved run; the rule and
    ``meta_opt`` are loaded in place."""
    json_path, tensor_path = out / STATE_JSON, out / STATE_TENSORS
    if not json_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(f"{out}: no saved trainer state ({STATE_JSON}, {STATE_TENSORS}) to resume from")
    payload = json.loads(json_path.read_text())
    tensors = load_file(tensor_path, device=str(device))
    rule.load_state_dict({k[len("rule."):]: v for k, v in tensors.items() if k.startswith("rule.")})
    for i, p in enumerate(rule.parameters()):
        if str(i) in payload["adam_steps"]:
            meta_opt.state[p] = {
                "step": torch.tensor(payload["adam_steps"][str(i)]),
                "exp_avg": tensors[f"{i}.exp_avg"].clone(),
                "exp_avg_sq": tensors[f"{i}.exp_avg_sq"].clone(),
            }
    step = int(payload["outer_step"])
    _truncate_metrics(out, step)
    episodes = {k[len("episode."):]: v for k, v in tensors.items() if k.startswith("episode.")}
    return step, payload["best"], (episodes, payload.get("episodes"))


def _truncate_metrics(out: Path, step: int) -> None:
    """Drop metric lines past the saved step (written after the last save, before a crash)."""
    records = read_metrics(out)
    kept = [r for r in records if r["step"] <= step]
    if len(kept) != len(records):
        atomic_write(out / METRICS, lambda p: Path(p).write_text("".join(json.dumps(r) + "\n" for r in kept)))


def save_best(out: Path, rule: UpdateRule, cfg: TrainConfig, best: dict[str, Any]) -> None:
    rule.save_pretrained(out / "best", extra={"outer_step": best["step"], "selection": best, "training": cfg.to_dict()})
