"""``GNNOptimizer``: a learned update rule over the model's neural graph, as a torch optimizer."""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .functional import NOMINAL_KEY, Context, anneal_factor, init_momenta, learned_update
from .graph import LAYER, NORM, NeuralGraph, build_neural_graph, infer_kinds, layout_graph
from .rules.base import UpdateRule

#: keys of ``optimizer.state`` that belong to the whole model rather than one parameter
RULE_STATE_KEY = "rule_state"
SKIPS_KEY = "nonfinite_skips"
CONTEXT_KEY = "graph_context"  # with graph_every > 1: the context the steps in between read
GRAPH_STEP_KEY = "graph_step"  # with graph_every > 1: steps taken, to know when the graph runs
HORIZON_STEP_KEY = "horizon_step"  # with total_steps: steps taken, for the annealing


class GNNOptimizer(torch.optim.Optimizer):
    r"""Optimizer whose update is written by a learned rule reading the model's neural graph.

    Every step, for each parameter element (Kofinas et al. 2024, sec. 4.3)::

        m_beta  <- beta * m_beta + g                       beta in {0.5, 0.9, 0.99, 0.999, 0.9999}
        d, m    =  rule(preprocess([theta, g, m_beta...]), graph)
        theta   <- theta * (1 - lr * weight_decay) + lr * s_t * d * lambda * exp(lambda * m)

    with :math:`\lambda` = ``rule.config["update_scale"]`` (0.01) and ``s_t`` the tensor's fixed
    step factor from the layout (``rule.config``'s ``fan_in_power`` and ``depth_power``;
    :func:`gnnopt.functional.step_factors`). With ``rule.config["nominal_blend"]`` B > 0, a
    fraction B of each tensor's update is then turned to Adam's direction at the same RMS
    (:func:`gnnopt.functional.nominal_blend`; its second moment is part of the optimizer state).
    ``lr`` multiplies the learned update (1.0 = as meta-trained), so ``torch.optim.lr_scheduler`` works; weight
    decay is decoupled and also scaled by ``lr``.

    The neural graph (neurons are nodes, weights are edges) spans the parameters of all
    param groups in order and is built once per layout. Parameters that fit no layer chain
    (embeddings, attention projections, recurrent, transposed, grouped or depthwise layers,
    ...) are still optimized, by the rule's head alone; a warning names them, or
    ``strict=True`` raises ``ValueError``. Layers chain in declaration order; a layer that
    seems declared before the layer feeding it gets a warning.

    Passing the module is exact: its module types say which parameters are Linear/Conv2d
    layers. ``model.named_parameters()`` gives the same graph for the common cases (MLPs,
    CNNs with norms, LSTM/GRU, ConvTranspose2d with a bias, grouped and depthwise convs
    after the layer that feeds them) but reads some layouts from names and shapes alone:
    an ``nn.Embedding`` looks like a Linear, a ConvTranspose2d without bias like a Conv2d
    (see :mod:`gnnopt._layout`).

    Args:
        params: ``model.named_parameters()``, an ``nn.Module`` (its named parameters, with
            module types used to recognise layers), a list of param-group dicts, or plain
            tensors (names are then inferred from shapes alone).
        rule: a learned update rule (``gnnopt.rules.create(name)`` or
            :meth:`from_pretrained`). Its weights are not trained by this optimizer.
        lr: multiplier of the learned update.
        weight_decay: decoupled weight decay coefficient.
        strict: raise instead of warning when some parameters fit no chain of the graph.
        graph_every: run the rule's graph part every ``graph_every`` steps only; the steps in
            between read the context it wrote (per edge, node or tensor) with their own
            fresh features, so they cost about the per-element head alone. 1 runs the whole
            rule every step. ``None`` (the default): the rule's own default,
            ``rule.config["graph_every"]`` (what its checkpoint was measured with).
        total_steps: the run's length, if known (like a scheduler's ``T_max``): the update then
            decays linearly to 0 over the last ``rule.config["anneal_fraction"]`` (0.2) of
            it, and stays 0 after it (the first step past it warns). ``None`` (the default):
            no decay. It multiplies ``lr``, so a scheduler still composes with it.

    Gradients that are not finite never reach the parameters: the step is skipped for the
    affected param group, a ``RuntimeWarning`` is issued and
    ``optimizer.state["nonfinite_skips"]`` counts it. So is a group whose ``lr`` or
    ``weight_decay`` is not finite when ``step()`` meets it (set by a scheduler or by hand).
    A parameter that itself holds NaN or inf is skipped alone (a warning names it): the
    rule reads it as zero, so that it cannot spoil the other parameters' updates.

    State: momenta (and a recurrent rule's state) are float32 whatever the parameters'
    dtype, also after :meth:`load_state_dict`, so that resuming float64, bfloat16 and
    float16 models is exact. ``copy.deepcopy`` and ``pickle`` give a working optimizer
    (the graph is rebuilt from the parameters).

    Schedulers: any ``torch.optim.lr_scheduler`` that sets ``lr`` works. ``OneCycleLR``
    and ``CyclicLR`` need ``cycle_momentum=False``: this optimizer has no ``momentum`` or
    ``betas`` option for them to cycle (torch raises ``ValueError`` otherwise).
    """

    def __init__(
        self,
        params: Iterable[Any] | nn.Module,
        rule: UpdateRule,
        *,
        lr: float = 1.0,
        weight_decay: float = 0.0,
        strict: bool = False,
        graph_every: int | None = None,
        total_steps: int | None = None,
    ) -> None:
        if not isinstance(rule, UpdateRule):
            raise TypeError(f"rule must be a gnnopt UpdateRule (e.g. gnnopt.rules.create('pna')), got {type(rule).__name__}")
        _check_options(lr, weight_decay)
        if graph_every is None:
            graph_every = rule.config["graph_every"]
        if isinstance(graph_every, bool) or not isinstance(graph_every, int) or graph_every < 1:
            raise ValueError(f"Invalid graph_every: {graph_every!r} (a positive integer is required)")
        self.graph_every = graph_every
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                        or total_steps < 1):
            raise ValueError(f"Invalid total_steps: {total_steps!r} (a positive integer or None is required)")
        self.total_steps = total_steps
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
        graph_every: int | None = None,
        total_steps: int | None = None,
        **group_overrides: Any,
    ) -> GNNOptimizer:
        """An optimizer with a pretrained rule: a bundled name (:func:`list_pretrained`), a
        local directory, or a Hugging Face Hub repo id. ``group_overrides`` (``lr``,
        ``weight_decay``) become the param-group defaults."""
        rule = UpdateRule.from_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                          local_files_only=local_files_only)
        return cls(params, rule, strict=strict, graph_every=graph_every, total_steps=total_steps,
                   **group_overrides)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_options(param_group.get("lr", 0.0), param_group.get("weight_decay", 0.0))
        params = param_group.get("params")
        if not isinstance(params, (Tensor, set)) and params is not None:  # torch refuses sets itself
            params = param_group["params"] = list(params)  # a generator is read once, here
            if (getattr(self, "param_groups", None) and "param_names" in self.param_groups[0]
                    and not all(isinstance(p, tuple) for p in params)):
                raise ValueError("this optimizer's parameters are named (it was built from a model or "
                                 "from named_parameters()), so a new group must be too: "
                                 "add_param_group({'params': list(module.named_parameters()), ...})")
        super().add_param_group(param_group)
        if hasattr(self, "_graph"):  # not during __init__, which builds once at the end
            self._rebuild_graph()

    def _rebuild_graph(self) -> None:
        graph = self._build_graph()
        for note in graph.notes:
            warnings.warn(note, UserWarning, stacklevel=3)
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
        for key in (RULE_STATE_KEY, CONTEXT_KEY, GRAPH_STEP_KEY):  # they belong to one graph
            self.state.pop(key, None)

    def _build_graph(self) -> NeuralGraph:
        names, shapes, kinds = [], [], []
        for g, group in enumerate(self.param_groups):
            group_names = group.get("param_names")
            for i, p in enumerate(group["params"]):
                if group_names:
                    name, kind = group_names[i], self._kinds.get(group_names[i])
                else:  # unnamed tensors: layers and their biases/norms by shape alone
                    name, kind = f"group{g}.param{i}", (LAYER if p.dim() in (2, 4) else NORM if p.dim() == 1 else None)
                names.append(name)
                shapes.append(tuple(p.shape))
                kinds.append(kind)
        if not names:
            raise ValueError("optimizer got an empty parameter list")
        if not self.rule.reads_graph:  # the layout is all it reads
            return layout_graph(names, shapes, **self.rule.graph_options)
        return build_neural_graph(names, shapes, kinds, **self.rule.graph_options)

    # ------------------------------------------------------------------ copy and pickle
    def __getstate__(self) -> dict[str, Any]:
        # the graph is not stored: it is a function of the layout, rebuilt on unpickling
        return {**super().__getstate__(), "rule": self.rule, "strict": self.strict, "_kinds": self._kinds,
                "graph_every": self.graph_every, "total_steps": self.total_steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("total_steps", None)  # pickled before total_steps existed
        # torch's load_state_dict also calls __setstate__ (state and groups only): the graph stays
        if "_graph" not in self.__dict__:
            self._graph, self._device_graph = self._build_graph(), None

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

        for group in self.param_groups:  # before anything is touched: a bad option changes nothing
            _check_options(group["lr"], group["weight_decay"], finite=False)
        raw = []
        for p in params:
            if not self.state[p]:
                self.state[p].update(step=0, momenta=init_momenta(p))
            g = p.grad if p.requires_grad else None
            if g is not None and g.is_sparse:
                raise RuntimeError("GNNOptimizer does not support sparse gradients")
            raw.append(g)
        param_ok, grad_ok = _finite_flags(params, raw)

        thetas, grads, apply_mask = [], [], []
        i = 0
        for group in self.param_groups:
            n = len(group["params"])
            reason = _group_skip_reason(group, grad_ok[i: i + n])
            if reason:
                self._skipped(f"{reason}: skipping this step for a param group")
            for j in range(i, i + n):
                p, g = params[j], raw[j]
                use = not reason and param_ok[j] and g is not None
                apply_mask.append(use)
                # a skipped, absent or non-finite input is fed to the rule as zero, never as
                # NaN: the rule mixes all elements (a GNN), so one NaN would spoil every update
                thetas.append(p if param_ok[j] else torch.zeros_like(p))
                grads.append(g if use else torch.zeros_like(p))
            i += n
        bad = [graph.names[j] for j, ok in enumerate(param_ok) if not ok]
        if bad:
            self._skipped(f"non-finite values in parameter(s) {', '.join(bad)}: skipping them this step")

        rule_state = self.state.get(RULE_STATE_KEY)
        if self.rule.stateful and rule_state is None:
            rule_state = self.rule.init_state(graph, device)
        elif rule_state is not None:
            rule_state = {k: v.to(device) for k, v in rule_state.items()}
        momenta = [self.state[p]["momenta"] for p in params]
        count = self.state.get(GRAPH_STEP_KEY, 0)
        if count % self.graph_every and self.state.get(CONTEXT_KEY) is not None:
            reuse = Context(self.state[CONTEXT_KEY].to(device))
        else:  # the graph runs: the old context goes (no reference left) before the new one is built
            reuse = None
            self.state.pop(CONTEXT_KEY, None)
        progress = (self.state[params[0]]["step"], self.total_steps)  # what a scale module reads
        # the momenta advance in place when every parameter takes this step (with finite
        # gradients they advance even if the rule's update then turns out non-finite)
        result = learned_update(self.rule, graph, thetas, grads, momenta, rule_state, context=reuse,
                                momenta_in_place=all(apply_mask), progress=progress)
        if self.graph_every > 1:
            self.state[GRAPH_STEP_KEY] = count + 1
            if reuse is None and result.context.table is not None:
                self.state[CONTEXT_KEY] = result.context.table

        horizon = self.state.get(HORIZON_STEP_KEY, 0)
        anneal = anneal_factor(horizon, self.total_steps, self.rule.config["anneal_fraction"])
        if self.total_steps is not None:
            self.state[HORIZON_STEP_KEY] = horizon + 1
            if horizon == self.total_steps:  # once: the first step past the run's length
                warnings.warn(f"step() past total_steps={self.total_steps}: the update is 0 from here on "
                              "(pass a larger total_steps, or None)", RuntimeWarning, stacklevel=2)
        i = 0
        for group in self.param_groups:
            lr, wd = group["lr"] * anneal, group["weight_decay"]
            n = len(group["params"])
            indices = [j for j in range(i, i + n) if apply_mask[j]]
            if indices and not _all_finite([result.updates[j] for j in indices]):
                self._skipped("the rule produced a non-finite update: skipping this step for a param group")
                self.state.pop(CONTEXT_KEY, None)  # recompute it next step rather than reuse it
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

    def _skipped(self, message: str) -> None:
        self.state[SKIPS_KEY] = self.state.get(SKIPS_KEY, 0) + 1
        warnings.warn(f"{message} (skipped {self.state[SKIPS_KEY]} time(s) so far)", RuntimeWarning, stacklevel=3)

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
        """Load a state; ``state_dict`` itself is never mutated (it is deep-copied first).

        Unlike torch's default, tensors keep their own dtype (float32 momenta) rather than
        being cast to their parameter's: a float16 copy would round them (and overflow
        past 65504), a float64 one would not fit the rule's float32 weights.
        """
        state_dict = copy.deepcopy(state_dict)
        rule_state = state_dict["state"].get(RULE_STATE_KEY)
        own = {k: v for k, v in (rule_state or {}).items() if k != NOMINAL_KEY}
        if own:
            nodes = next(iter(own.values())).shape[0]
            if nodes != self.graph.num_nodes:
                raise ValueError(
                    f"state_dict holds a recurrent rule state for {nodes} graph nodes, "
                    f"but this optimizer's graph has {self.graph.num_nodes}"
                )
        second = (rule_state or {}).get(NOMINAL_KEY)
        if second is not None and second.numel() != self.graph.num_elements:
            raise ValueError(f"state_dict holds the nominal term's second moment of {second.numel()} elements, "
                             f"but this optimizer's parameters have {self.graph.num_elements}")
        super().load_state_dict(state_dict)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        for saved_id, p in zip(saved_ids, self._all_params()):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                if isinstance(value, Tensor) and key != "step":
                    self.state[p][key] = value.to(device=p.device)
            if "momenta" in self.state[p]:  # older state_dicts may hold cast momenta
                self.state[p]["momenta"] = self.state[p]["momenta"].float()


def _check_options(lr: Any, weight_decay: Any, *, finite: bool = True) -> None:
    """Raise ``ValueError`` unless ``lr`` and ``weight_decay`` are non-negative real numbers (a
    one-element float tensor for ``lr``), and, with ``finite``, finite. ``step()`` checks with
    ``finite=False``: a non-finite value met there skips its group instead."""
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(value, Tensor) and name == "lr":
            ok = value.numel() == 1 and value.is_floating_point()
            value_ok = ok and bool((torch.isfinite(value) | (not finite)).all() and not (value < 0).any())
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            value_ok = ok and (math.isfinite(value) or not finite) and not value < 0
        if not value_ok:
            raise ValueError(f"Invalid {name}: {value}")


def _group_skip_reason(group: dict[str, Any], grads_finite: list[bool]) -> str | None:
    """Why a param group cannot step now, if it cannot."""
    for name in ("lr", "weight_decay"):
        value = group[name]
        if not math.isfinite(float(value)):
            return f"non-finite {name} {value}"
    if not all(grads_finite):
        return "non-finite gradient"
    return None


def _finite_flags(params: list[Tensor], grads: list[Tensor | None]) -> tuple[list[bool], list[bool]]:
    """Whether each parameter, and each gradient (``None`` counts as finite), is finite.

    One host sync for all of them: the flags are reduced on the device and read once.
    """
    present = [g for g in grads if g is not None]
    flags = torch.stack([torch.isfinite(t).all() for t in [*params, *present]]).tolist()
    param_ok, found = flags[: len(params)], iter(flags[len(params):])
    return param_ok, [True if g is None else next(found) for g in grads]


def _all_finite(tensors: list[Tensor]) -> bool:
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
