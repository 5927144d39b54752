"""``ff``: a per-element MLP on the 14 features.

Metz et al. 2019, "Understanding and correcting pathologies in the training of learned
optimizers" (the paper's "FF" baseline in Kofinas et al. 2024, table 4).
"""
from __future__ import annotations

from .base import Head, UpdateRule


class FFRule(UpdateRule):
    """Each element's update depends on its own features only: it reads no graph (the
    default :meth:`~UpdateRule.embed` returns no table)."""

    name = "ff"
    reads_features_by_rows = True
    reads_graph = False
    defaults = {"hidden": 64, "layers": 2, "update_scale": 0.01}

    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.head = Head(0, self.config["hidden"], self.config["layers"])
