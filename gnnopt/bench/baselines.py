"""Hand-designed optimizers that learned rules are compared against (Kofinas et al. 2024, sec. 4.3).

Each tuned baseline's learning rate is tuned on the validation split over
:data:`DEFAULT_LR_GRIDS`; nothing else is tuned:

- ``adam``: ``torch.optim.Adam``, betas (0.9, 0.999);
- ``adam-cosine``: the same, its learning rate decayed to 0 by a cosine over the run;
- ``adamw``: ``torch.optim.AdamW`` with decoupled weight decay 0.01 (PyTorch's default);
- ``sgd``: ``torch.optim.SGD`` with heavy-ball momentum 0.9;
- ``rmsprop``: ``torch.optim.RMSprop``, smoothing 0.99, no momentum.

The tuning-free optimizers a user would pick instead of a learned rule run at their
package's defaults (:data:`TUNING_FREE`), never tuned:

- ``prodigy``: ``prodigyopt.Prodigy`` (Mishchenko & Defazio 2024), lr 1.0;
- ``schedulefree``: ``schedulefree.AdamWScheduleFree`` (Defazio et al. 2024), lr 0.0025;
  it evaluates at its averaged iterate, so it has ``train()``/``eval()`` modes that
  :func:`gnnopt.bench.protocol.train_optimizee` switches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["make_baseline", "list_baselines", "DEFAULT_LR_GRIDS", "TUNING_FREE"]

#: Learning rates searched for each baseline. The Adam grid is the one measured on task 17
#: (best 1e-2 after 1,000 steps). SGD's steps are proportional to the gradient rather than
#: normalised like Adam's, so its useful range sits higher; RMSprop's sits a little lower.
_ADAM_GRID = (1e-3, 3e-3, 6e-3, 1e-2, 2e-2, 3e-2)
DEFAULT_LR_GRIDS: dict[str, tuple[float, ...]] = {
    "adam": _ADAM_GRID,
    "adam-cosine": _ADAM_GRID,
    "adamw": _ADAM_GRID,
    "sgd": (1e-2, 3e-2, 6e-2, 1e-1, 2e-1, 3e-1),
    "rmsprop": (3e-4, 1e-3, 2e-3, 3e-3, 6e-3, 1e-2),
}

#: Tuning-free optimizers and the default learning rate of their packages (not tuned).
TUNING_FREE: dict[str, float] = {"prodigy": 1.0, "schedulefree": 0.0025}

_ALIASES = {"sgd-momentum": "sgd", "sgdm": "sgd", "momentum": "sgd", "schedule-free": "schedulefree"}
_PACKAGES = {"prodigy": "prodigyopt", "schedulefree": "schedulefree"}


def list_baselines() -> list[str]:
    """Names accepted by :func:`make_baseline`."""
    return [*DEFAULT_LR_GRIDS, *TUNING_FREE]


def make_baseline(
    name: str,
    params: nn.Module | Iterable[Any],
    lr: float | None = None,
    *,
    total_steps: int | None = None,
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Build the hand-designed optimizer ``name`` over ``params`` with learning rate ``lr``.

    Args:
        name: one of :func:`list_baselines`.
        params: a module, its ``parameters()`` / ``named_parameters()``, or param groups.
        lr: the learning rate (positive, finite); for the :data:`TUNING_FREE` ones it may be
            left out (their package's default).
        total_steps: the run's length, which ``adam-cosine`` decays over (required there).
        **overrides: other constructor arguments of the optimizer (e.g. ``weight_decay``).
    """
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if lr is None and key in TUNING_FREE:
        lr = TUNING_FREE[key]
    if key not in DEFAULT_LR_GRIDS and key not in TUNING_FREE:
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
    if key == "adam-cosine":
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"adam-cosine needs total_steps, the run's length (got {total_steps!r})")
        opt = torch.optim.Adam(params, lr=lr, **overrides)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
        # stepped after every optimizer step, so the training loop needs no scheduler of its own
        opt.register_step_post_hook(lambda *_: schedule.step())
        return opt
    if key in TUNING_FREE:
        return _tuning_free(key, params, lr, overrides)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, **{"weight_decay": 1e-2, **overrides})
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, **{"momentum": 0.9, **overrides})
    return torch.optim.RMSprop(params, lr=lr, **overrides)


def _tuning_free(key: str, params: list, lr: float, overrides: dict[str, Any]) -> torch.optim.Optimizer:
    try:
        if key == "prodigy":
            from prodigyopt import Prodigy

            return Prodigy(params, lr=lr, **overrides)
        from schedulefree import AdamWScheduleFree

        opt = AdamWScheduleFree(params, lr=lr, **overrides)
        opt.train()
        return opt
    except ImportError as err:
        raise ImportError(f"the {key} baseline needs: pip install {_PACKAGES[key]} (or gnnopt[bench])") from err
