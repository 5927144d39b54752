"""Registry of learned update rules: ``create(name, **config)`` builds one.

Each rule's defaults are the paper configuration (Kofinas et al. 2024, sec. 4.3).
"""
from __future__ import annotations

from typing import Any

from .base import Head, RuleState, UpdateRule, get_rule_class, list_rules, register
from .ff import FFRule
from .lstm import LSTMRule
from .pna import PNARule
from .pna_lstm import PNALSTMRule
from .rt import RTRule

for _cls in (FFRule, LSTMRule, PNARule, RTRule, PNALSTMRule):
    register(_cls)


def create(name: str, **config: Any) -> UpdateRule:
    """Build a freshly initialised rule; options not given take the paper configuration."""
    return get_rule_class(name)(**config)


def load_rule(name_or_path: str, **kwargs: Any) -> UpdateRule:
    """A saved rule from a bundled name, a local directory or a Hub repo id
    (:meth:`UpdateRule.from_pretrained`; keyword arguments: ``revision``, ``cache_dir``,
    ``local_files_only``)."""
    return UpdateRule.from_pretrained(name_or_path, **kwargs)


__all__ = ["FFRule", "Head", "LSTMRule", "PNALSTMRule", "PNARule", "RTRule", "RuleState", "UpdateRule", "create",
           "get_rule_class", "list_rules", "load_rule", "register"]
