"""Where a meta-training run starts: a fresh rule, a saved one (fine-tuning), or a fresh
rule whose head is transplanted from a saved one; and which of its parameters are trained."""
from __future__ import annotations

import torch

from ..rules import Head, UpdateRule, create, load_rule
from ..rules.base import SCALE_DEFAULTS, UPDATE_FORM_DEFAULTS
from .config import TrainConfig


def initial_rule(cfg: TrainConfig) -> UpdateRule:
    """A fresh rule of ``cfg.rule``, or the saved rule ``cfg.init`` (which must be of that kind),
    with its head taken from the saved rule ``cfg.init_head`` when that is set.

    With ``cfg.init``, options missing from ``cfg.rule_config`` take the saved rule's values, so
    a fine-tune needs no repeat of them; an architecture option given explicitly must match the
    saved rule, while the update form (:data:`~gnnopt.rules.base.UPDATE_FORM_DEFAULTS`: they
    change no weight) may differ: the run then trains the saved weights under the new form.
    ``scale_hidden`` may add a scale module to a saved rule without one (phase B of
    docs/NEXT_RULE.md: ``--train-only scale`` then meta-trains it alone).
    """
    saved = load_rule(cfg.init) if cfg.init is not None else None
    defaults = saved.config if saved is not None and saved.name == cfg.rule else {}
    rule = create(cfg.rule, **{**defaults, **cfg.rule_config})  # validates the options, draws as before
    if saved is not None:
        # a scale module may be added to a saved rule that has none (it starts at zero output)
        adds_scale = saved.scale is None and rule.scale is not None

        def architecture(config: dict) -> dict:
            return {k: v for k, v in config.items()
                    if k not in UPDATE_FORM_DEFAULTS and not (adds_scale and k in SCALE_DEFAULTS)}

        if saved.name != cfg.rule or architecture(rule.config) != architecture(saved.config):
            raise ValueError(f"--init {cfg.init}: a {saved.name} rule with {saved.config}, but this run trains a "
                             f"{cfg.rule} rule with {rule.config}")
        rule.load_state_dict({**rule.state_dict(), **saved.state_dict()})
    if cfg.init_head is not None:
        transplant_head(load_rule(cfg.init_head).head, rule.head, label=cfg.init_head)
    return rule


@torch.no_grad()
def transplant_head(source: Head, target: Head, *, label: str = "the source rule") -> None:
    """Make ``target`` compute what ``source`` does, ignoring its graph embedding.

    The heads must have the same hidden sizes; ``target``'s embedding columns of its first
    layer are zeroed (the own-feature columns and every later layer are copied), so the
    embedding only enters once meta-training moves those columns.
    """
    if len(source.net) != len(target.net) or any(
        a.weight.shape[0] != b.weight.shape[0] for a, b in zip(source.net[::2], target.net[::2])
    ):
        raise ValueError(f"--init-head {label}: its head ({source.net}) does not match this rule's ({target.net})")
    first = target.net[0]
    first.weight.zero_()
    first.weight[:, target.embed_dim:] = source.net[0].weight[:, source.embed_dim:]
    first.bias.copy_(source.net[0].bias)
    for a, b in zip(source.net[2::2], target.net[2::2]):
        b.load_state_dict(a.state_dict())


def trained_parameters(rule: UpdateRule, modules: list[str]) -> list[torch.nn.Parameter]:
    """The parameters meta-training updates: all of ``rule``'s, or those under ``modules``
    (``train_only``); the others stop requiring gradients, so none are computed for them."""
    if not modules:
        return list(rule.parameters())
    under = {m: [p for n, p in rule.named_parameters() if n == m or n.startswith(m + ".")] for m in modules}
    missing = [m for m, params in under.items() if not params]
    if missing:
        tops = sorted({n.split(".")[0] for n, _ in rule.named_parameters()})
        raise ValueError(f"Invalid train_only: rule {rule.name!r} has no parameters under {', '.join(missing)} "
                         f"(its modules: {', '.join(tops)})")
    trained = {id(p): p for params in under.values() for p in params}
    for param in rule.parameters():
        param.requires_grad_(id(param) in trained)
    return list(trained.values())
