"""Many processes via ``torchrun``: each runs its own episodes; meta-gradients are all-reduced.

gloo on CPU, NCCL on CUDA. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment)
everything is a no-op on one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    initialized_here: bool = False

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> DistContext:
        device = torch.device(device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, device)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        created = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            created = True
        return cls(dist.get_rank(), dist.get_world_size(), device, created)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_grads(self, module: nn.Module) -> None:
        """Sum gradients over processes (each episode was already weighted by 1/world)."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
