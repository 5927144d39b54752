"""Mini-batches drawn by index from a split (no DataLoader workers), and evaluation on a split."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datasets import Split


class BatchStream:
    """Endless random mini-batches of a :class:`Split`, drawn by index (no DataLoader).

    Each epoch is a fresh permutation drawn from ``generator`` (on the CPU, so a seed gives
    the same batches on any device); the last incomplete batch of an epoch is dropped, so
    every batch has exactly ``batch_size`` examples.

    Args:
        split: the examples to draw from.
        batch_size: examples per batch, at most ``len(split)``.
        generator: a CPU ``torch.Generator``; by default one seeded from torch's global RNG,
            so ``torch.manual_seed`` makes the stream reproducible.
    """

    def __init__(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (need a positive int)")
        if batch_size > len(split):
            raise ValueError(f"batch_size {batch_size} exceeds the split's {len(split)} examples")
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        elif generator.device.type != "cpu":
            raise ValueError(f"BatchStream needs a CPU generator, got one on {generator.device}")
        self.split = split
        self.batch_size = batch_size
        self.generator = generator
        self.epoch = 0
        self._perm: Tensor | None = None  # on the split's device
        self._pos = 0

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch ``(x, y)``: ``(batch_size, C, H, W)`` and ``(batch_size,)``."""
        if self._perm is None or self._pos + self.batch_size > len(self._perm):
            if self._perm is not None:
                self.epoch += 1
            perm = torch.randperm(len(self.split), generator=self.generator)
            self._perm = perm.to(self.split.device)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.split.x.index_select(0, idx), self.split.y.index_select(0, idx)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        return self.next()

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream, so a resumed run draws the same batches."""
        return {
            "generator": self.generator.get_state(),
            "perm": None if self._perm is None else self._perm.cpu(),
            "pos": self._pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].clone())
        perm = state["perm"]
        self._perm = None if perm is None else perm.to(self.split.device)
        self._pos = int(state["pos"])
        self.epoch = int(state["epoch"])


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (in [0, 1]) of ``model`` on ``split``, in eval mode.

    The model's previous train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (need a positive int)")
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    was_training = model.training
    model.eval()
    try:
        losses, corrects = [], []
        for start in range(0, len(split), batch_size):
            x = split.x[start : start + batch_size]
            y = split.y[start : start + batch_size]
            logits = model(x)
            losses.append(F.cross_entropy(logits, y, reduction="sum"))
            corrects.append((logits.argmax(dim=1) == y).sum())
    finally:
        model.train(was_training)
    # One device-to-host copy at the end; float64 sums on the CPU (not every device has them).
    loss_sum = torch.stack(losses).cpu().double().sum().item()
    correct = torch.stack(corrects).cpu().sum().item()
    n = len(split)
    return loss_sum / n, correct / n
