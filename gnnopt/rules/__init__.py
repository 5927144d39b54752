"""Registry of learned update rules: ``create(name, **config)`` builds one.

Each rule's defaults are the paper configuration (Kofinas et al. 2024, sec. 4.3).
"""
from __future__ import annotations

from typing import Any

from .base import Head, RuleState, UpdateRule
from .ff import FFRule
from .lstm import LSTMRule
from .pna import PNARule
from .pna_lstm import PNALSTMRule
from .rt import RTRule

_REGISTRY: dict[str, type[UpdateRule]] = {}


def register(cls: type[UpdateRule]) -> type[UpdateRule]:
    """Add a rule class to the registry under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, UpdateRule)):
        raise TypeError(f"{cls!r} is not an UpdateRule subclass")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a rule named '{cls.name}' is already registered")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (FFRule, LSTMRule, PNARule, RTRule, PNALSTMRule):
    register(_cls)


def list_rules() -> list[str]:
    """Names of the registered rules."""
    return sorted(_REGISTRY)


def get_rule_class(name: str) -> type[UpdateRule]:
    key = name.replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"Unknown rule '{name}'; registered rules: {', '.join(list_rules())}")
    return _REGISTRY[key]


def create(name: str, **config: Any) -> UpdateRule:
    """Build a freshly initialised rule; options not given take the paper configuration."""
    return get_rule_class(name)(**config)


__all__ = ["Head", "RuleState", "UpdateRule", "create", "get_rule_class", "list_rules", "register"]
