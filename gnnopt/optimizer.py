"""``GNNOptimizer``: a learned update rule over the model's neural graph, as a torch optimizer."""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .functional import init_momenta, learned_update
from .graph import LAYER, NeuralGraph, build_neural_graph, infer_kinds
from .rules.base import UpdateRule

#: keys of ``optimizer.state`` that belong to the whole model rather than one parameter
RULE_STATE_KEY = "rule_state"
SKIPS_KEY = "nonfinite_skips"


class GNNOptimizer(torch.optim.Optimizer):
    r"""Optimizer whose update is written by a learned rule reading the model's neural graph.

    Every step, for each parameter element (Kofinas et al. 2024, sec. 4.3)::

        m_beta  <- beta * m_beta + g                       beta in {0.5, 0.9, 0.99, 0.999, 0.9999}
        d, m    =  rule(preprocess([theta, g, m_beta...]), graph)
        theta   <- theta * (1 - lr * weight_decay) + lr * d * lambda * exp(lambda * m)

    with :math:`\lambda` = ``rule.config["update_scale"]`` (0.01). ``lr`` multiplies the
    learned update (1.0 = as meta-trained), so ``torch.optim.lr_scheduler`` works; weight
    decay is decoupled and also scaled by ``lr``.

    The neural graph (neurons are nodes, weights are edges) spans the parameters of all
    param groups in order and is built once per layout. Parameters that fit no layer chain
    (embeddings, attention projections, ...) are still optimized, by the rule's head alone;
    a warning names them, or ``strict=True`` raises ``ValueError``.

    Args:
        params: ``model.named_parameters()``, an ``nn.Module`` (its named parameters, with
            module types used to recognise layers), a list of param-group dicts, or plain
            tensors (names are then inferred from shapes alone).
        rule: a learned update rule (``gnnopt.rules.create(name)`` or
            :meth:`from_pretrained`). Its weights are not trained by this optimizer.
        lr: multiplier of the learned update.
        weight_decay: decoupled weight decay coefficient.
        strict: raise instead of warning when some parameters fit no chain of the graph.

    Gradients that are not finite never reach the parameters: the step is skipped for the
    affected param group, a ``RuntimeWarning`` is issued and
    ``optimizer.state["nonfinite_skips"]`` counts it.
    """

    def __init__(
        self,
        params: Iterable[Any] | nn.Module,
        rule: UpdateRule,
        *,
        lr: float = 1.0,
        weight_decay: float = 0.0,
        strict: bool = False,
    ) -> None:
        if not isinstance(rule, UpdateRule):
            raise TypeError(f"rule must be a gnnopt UpdateRule (e.g. gnnopt.rules.create('pna')), got {type(rule).__name__}")
        _check_options(lr, weight_decay)
        self._kinds: dict[str, str] = {}
        if isinstance(params, nn.Module):
            self._kinds = infer_kinds(params)
            params = params.named_parameters()
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of tensors, (name, tensor) pairs or dicts, or an nn.Module")
        self.rule = rule
        self.strict = strict
        super().__init__(list(params), {"lr": lr, "weight_decay": weight_decay})
        self._graph: NeuralGraph | None = None
        self._device_graph: NeuralGraph | None = None
        self._rebuild_graph()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        params: Iterable[Any] | nn.Module,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        strict: bool = False,
        **group_overrides: Any,
    ) -> GNNOptimizer:
        """An optimizer with a pretrained rule: a bundled name (:func:`list_pretrained`), a
        local directory, or a Hugging Face Hub repo id. ``group_overrides`` (``lr``,
        ``weight_decay``) become the param-group defaults."""
        from .hub import load_rule

        rule = load_rule(name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return cls(params, rule, strict=strict, **group_overrides)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_options(param_group.get("lr", 0.0), param_group.get("weight_decay", 0.0))
        super().add_param_group(param_group)
        if hasattr(self, "_graph"):  # not during __init__, which builds once at the end
            self._rebuild_graph()

    def _rebuild_graph(self) -> None:
        names, shapes, kinds = [], [], []
        for g, group in enumerate(self.param_groups):
            group_names = group.get("param_names")
            for i, p in enumerate(group["params"]):
                if group_names:
                    name, kind = group_names[i], self._kinds.get(group_names[i])
                else:  # unnamed tensors: recognise layers by shape alone
                    name, kind = f"group{g}.param{i}", (LAYER if p.dim() in (2, 4) else None)
                names.append(name)
                shapes.append(tuple(p.shape))
                kinds.append(kind)
        if not names:
            raise ValueError("optimizer got an empty parameter list")
        graph = build_neural_graph(names, shapes, kinds, **self.rule.graph_options)
        if graph.fallback:
            listed = ", ".join(graph.fallback)
            if self.strict:
                raise ValueError(f"strict=True but these parameters fit no layer chain of the neural graph: {listed}")
            warnings.warn(
                f"{len(graph.fallback)} parameter(s) fit no layer chain of the neural graph and are "
                f"optimized by the rule's head alone (zero graph embedding): {listed}",
                UserWarning,
                stacklevel=3,
            )
        self._graph, self._device_graph = graph, None
        self.state.pop(RULE_STATE_KEY, None)  # a recurrent state belongs to one graph

    @property
    def graph(self) -> NeuralGraph:
        """The neural graph of the optimized parameters (on CPU)."""
        assert self._graph is not None
        return self._graph

    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        params = self._all_params()
        device = params[0].device
        if any(p.device != device for p in params):
            raise ValueError("all parameters of a GNNOptimizer must live on one device")
        graph = self._graph_on(device)
        self._move_rule(device)

        grads, momenta, apply_mask = [], [], []
        for group in self.param_groups:
            group_grads = []
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["momenta"] = init_momenta(p)
                momenta.append(state["momenta"])
                g = p.grad if p.requires_grad else None
                if g is not None and g.is_sparse:
                    raise RuntimeError("GNNOptimizer does not support sparse gradients")
                group_grads.append(g)
            finite = _all_finite([g for g in group_grads if g is not None])
            if not finite:
                self.state[SKIPS_KEY] = self.state.get(SKIPS_KEY, 0) + 1
                warnings.warn(
                    "non-finite gradient: skipping this step for a param group "
                    f"(skipped {self.state[SKIPS_KEY]} time(s) so far)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            for p, g in zip(group["params"], group_grads):
                apply_mask.append(finite and g is not None)
                # a skipped or absent gradient is fed to the rule as zero, never as NaN
                grads.append(g if (finite and g is not None) else torch.zeros_like(p))

        rule_state = self.state.get(RULE_STATE_KEY)
        if self.rule.stateful and rule_state is None:
            rule_state = self.rule.init_state(graph, device)
        elif rule_state is not None:
            rule_state = {k: v.to(device) for k, v in rule_state.items()}
        result = learned_update(self.rule, graph, params, grads, momenta, rule_state)

        i = 0
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            n = len(group["params"])
            indices = [j for j in range(i, i + n) if apply_mask[j]]
            if indices and not _all_finite([result.updates[j] for j in indices]):
                self.state[SKIPS_KEY] = self.state.get(SKIPS_KEY, 0) + 1
                warnings.warn("the rule produced a non-finite update: skipping this step for a param group",
                              RuntimeWarning, stacklevel=2)
                indices = []
            for j in indices:
                p, state = params[j], self.state[params[j]]
                if wd != 0:
                    p.mul_(1.0 - lr * wd)
                p.add_(result.updates[j].to(p.dtype), alpha=lr)
                state["momenta"] = result.momenta[j]
                state["step"] += 1
            i += n
        if result.rule_state is not None:
            self.state[RULE_STATE_KEY] = result.rule_state
        return loss

    def _graph_on(self, device: torch.device) -> NeuralGraph:
        if self._device_graph is None or self._device_graph.device != device:
            self._device_graph = self.graph.to(device)
        return self._device_graph

    def _move_rule(self, device: torch.device) -> None:
        first = next(iter(self.rule.parameters()), None)
        if first is not None and first.device != device:
            self.rule.to(device)

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state; ``state_dict`` itself is never mutated (it is deep-copied first)."""
        state_dict = copy.deepcopy(state_dict)
        rule_state = state_dict["state"].get(RULE_STATE_KEY)
        if rule_state is not None:
            nodes = next(iter(rule_state.values())).shape[0]
            if nodes != self.graph.num_nodes:
                raise ValueError(
                    f"state_dict holds a recurrent rule state for {nodes} graph nodes, "
                    f"but this optimizer's graph has {self.graph.num_nodes}"
                )
        super().load_state_dict(state_dict)


def _check_options(lr: Any, weight_decay: Any) -> None:
    if not isinstance(lr, (int, float, Tensor)) or lr < 0:
        raise ValueError(f"Invalid lr: {lr}")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"Invalid weight_decay: {weight_decay}")


def _all_finite(tensors: list[Tensor]) -> bool:
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
