"""Hand-designed optimizers that learned rules are compared against (Kofinas et al. 2024, sec. 4.3).

Each baseline's learning rate is tuned on the validation split over
:data:`DEFAULT_LR_GRIDS`; nothing else is tuned:

- ``adam``: ``torch.optim.Adam``, betas (0.9, 0.999);
- ``adamw``: ``torch.optim.AdamW`` with decoupled weight decay 0.01 (PyTorch's default);
- ``sgd``: ``torch.optim.SGD`` with heavy-ball momentum 0.9;
- ``rmsprop``: ``torch.optim.RMSprop``, smoothing 0.99, no momentum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["make_baseline", "list_baselines", "DEFAULT_LR_GRIDS"]

#: Learning rates searched for each baseline. The Adam grid is the one measured on task 17
#: (best 1e-2 after 1,000 steps). SGD's steps are proportional to the gradient rather than
#: normalised like Adam's, so its useful range sits higher; RMSprop's sits a little lower.
DEFAULT_LR_GRIDS: dict[str, tuple[float, ...]] = {
    "adam": (1e-3, 3e-3, 6e-3, 1e-2, 2e-2, 3e-2),
    "adamw": (1e-3, 3e-3, 6e-3, 1e-2, 2e-2, 3e-2),
    "sgd": (1e-2, 3e-2, 6e-2, 1e-1, 2e-1, 3e-1),
    "rmsprop": (3e-4, 1e-3, 2e-3, 3e-3, 6e-3, 1e-2),
}

_ALIASES = {"sgd-momentum": "sgd", "sgdm": "sgd", "momentum": "sgd"}


def list_baselines() -> list[str]:
    """Names accepted by :func:`make_baseline`."""
    return list(DEFAULT_LR_GRIDS)


def make_baseline(
    name: str,
    params: nn.Module | Iterable[Any],
    lr: float,
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Build the hand-designed optimizer ``name`` over ``params`` with learning rate ``lr``.

    Args:
        name: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or ``"rmsprop"``.
        params: a module, its ``parameters()`` / ``named_parameters()``, or param groups.
        lr: the learning rate (positive, finite).
        **overrides: other constructor arguments of the torch optimizer (e.g. ``weight_decay``).
    """
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in DEFAULT_LR_GRIDS:
        raise ValueError(f"Unknown baseline {name!r}; expected one of {list_baselines()}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"Invalid lr: {lr!r} (need a positive finite number)")
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = list(params)
    if params and isinstance(params[0], tuple):  # named_parameters(): names are not needed
        params = [p for _, p in params]
    if not params:
        raise ValueError("make_baseline got an empty parameter list")

    if key == "adam":
        return torch.optim.Adam(params, lr=lr, **overrides)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, **{"weight_decay": 1e-2, **overrides})
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, **{"momentum": 0.9, **overrides})
    return torch.optim.RMSprop(params, lr=lr, **overrides)
