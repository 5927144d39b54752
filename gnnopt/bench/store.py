"""A run store: every finished training run of an evaluation, one JSON file each, so that a
sweep stopped after hours resumes where it stopped (``python -m gnnopt.eval --resume``)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import Dataset
from .tasks import Task


class RunStore:
    """Finished training runs of an evaluation, one JSON file each in ``directory``.

    Every run (one method, learning rate, seed, task, split and length) is written as soon
    as it ends, atomically. With ``reuse=True`` a run whose file exists is read back
    instead of trained again, so a sweep stopped after hours resumes where it stopped. A
    learned rule is identified by a hash of its config and weights, not its name, so a
    retrained rule is never mistaken for the old one.
    """

    def __init__(self, directory: str | Path, *, reuse: bool = False) -> None:
        self.directory = Path(directory)
        self.reuse = reuse
        self.reused = 0

    def run(self, key: Mapping[str, Any], train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``train()``'s result for ``key`` (JSON-able), stored or read back."""
        key = json.loads(json.dumps(key, sort_keys=True))
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = self.directory / f"{key['task']}-{digest}.json"
        if self.reuse and path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                self.reused += 1
                return stored["result"]
        result = train()
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two sweeps may share a store
        tmp.write_text(json.dumps({"key": key, "result": result}))
        os.replace(tmp, path)
        return result


def rule_fingerprint(rule: nn.Module) -> str:
    """A short hash of a rule's class, config and weights (what :class:`RunStore` keys on)."""
    h = hashlib.sha256(type(rule).__name__.encode())
    h.update(json.dumps(getattr(rule, "config", {}), sort_keys=True).encode())
    for name, tensor in sorted(rule.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def stored(store: RunStore | None, key: dict[str, Any], train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return train() if store is None else store.run(key, train)


def run_key(task: Task, data: Dataset, method: str, *, steps: int, seed: int, split: str,
             record_every: int | None) -> dict[str, Any]:
    return {"task": task.name, "data": data.source, "method": method, "steps": steps, "seed": seed,
            "split": split, "record_every": record_every}
