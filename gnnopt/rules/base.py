"""What every learned update rule shares: the registry, its config, save/load, the per-element head.

A rule maps per-element features (``[P, FEATURE_SIZE]``, see :mod:`gnnopt.features`) and
the model's :class:`~gnnopt.graph.NeuralGraph` to two numbers per element, a direction
``d`` and a magnitude ``m`` (Metz et al. 2019, "Understanding and correcting pathologies
in the training of learned optimizers": ``delta = d * lambda * exp(lambda * m)``), in two
parts: a graph part that writes a context (one row per edge, node or tensor) and a
per-element head that reads it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import hub
from ..features import FEATURE_SIZE, TENSOR_FEATURE_SIZE
from ..graph import NeuralGraph, role_features

RuleState = dict[str, Tensor] | None


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` Linear layers with SiLU between them (``layers >= 1``)."""
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            modules.append(nn.SiLU())
    return nn.Sequential(*modules)


_REGISTRY: dict[str, type[UpdateRule]] = {}


def register(cls: type[UpdateRule]) -> type[UpdateRule]:
    """Add a rule class to the registry under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, UpdateRule)):
        raise TypeError(f"{cls!r} is not an UpdateRule subclass")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a rule named '{cls.name}' is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def list_rules() -> list[str]:
    """Names of the registered rules."""
    return sorted(_REGISTRY)


def get_rule_class(name: str) -> type[UpdateRule]:
    key = name.replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"Unknown rule '{name}'; registered rules: {', '.join(list_rules())}")
    return _REGISTRY[key]


#: Options every rule has besides its architecture: how its output becomes the update and how
#: an optimizer runs it by default (``config.json`` of an older checkpoint may lack them).
#:
#: * ``fan_in_power`` (α): each tensor's update is multiplied by ``(fan_in_ref / fan_in) ** α``,
#:   its fan-in being in-features × kernel positions (a bias takes its layer's); 0 turns it off.
#: * ``depth_power`` (β): every update is multiplied by ``min(1, (depth_ref / depth) ** β)``, the
#:   depth being the model's number of weight tensors (2-D or more); 0 turns it off.
#: * ``graph_every``: the default of ``GNNOptimizer(graph_every=...)`` for this rule.
#: * ``anneal_fraction``: with ``GNNOptimizer(total_steps=T)``, the update decays linearly to 0
#:   over this last fraction of the T steps (:func:`gnnopt.functional.anneal_factor`).
#: * ``nominal_blend`` (B): a fraction B of each tensor's update is turned to a nominal
#:   direction, Adam's, at the update's RMS (:func:`gnnopt.functional.nominal_blend`); 0 turns it off.
UPDATE_FORM_DEFAULTS: dict[str, Any] = {"fan_in_power": 0.0, "fan_in_ref": 144, "depth_power": 0.0, "depth_ref": 4,
                                        "graph_every": 1, "anneal_fraction": 0.2, "nominal_blend": 0.0}


#: The optional scale module (issue "Tuning-free"): ``scale_hidden`` ``None`` (none, the
#: default), 0 (a linear map) or the width of its hidden layer. It reads per-tensor features
#: (the tensor's place and size, the training progress, its parameters' and gradients' RMS)
#: and multiplies each tensor's update by ``exp(output)``; it starts at zero output, so adding
#: it to a trained rule changes no update until it is meta-trained.
SCALE_DEFAULTS: dict[str, Any] = {"scale_hidden": None}


class ScaleModule(nn.Module):
    """Per-tensor log step multipliers: ``[T, TENSOR_FEATURE_SIZE] -> [T]``, clamped to
    ``±limit`` (a factor of at most e^6 either way)."""

    limit: ClassVar[float] = 6.0

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = mlp(TENSOR_FEATURE_SIZE, hidden, 1, 2 if hidden else 1)
        with torch.no_grad():  # exp(0) = 1: the rule's own updates until it is trained
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, feats: Tensor) -> Tensor:
        return self.net(feats).squeeze(-1).clamp(-self.limit, self.limit)


class UpdateRule(nn.Module):
    """Base class of learned update rules.

    Subclasses set :attr:`name` and :attr:`defaults` (the paper configuration), implement
    :meth:`embed` (the graph part; none for a rule that reads no graph) and are added to the
    registry with :func:`register`. Every constructor
    argument is JSON-able, so ``config.json`` round-trips (``type(rule)(**rule.config)``
    rebuilds the architecture); :meth:`save_pretrained` and :meth:`from_pretrained` write and
    read the three checkpoint files (:mod:`gnnopt.hub`).
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    #: whether the rule carries a state across optimizer steps (see ``pna_lstm``)
    stateful: ClassVar[bool] = False
    #: whether the rule reads the neural graph's nodes and edges; rules that do not (``ff``,
    #: ``lstm``) get only the layout (:func:`~gnnopt.graph.layout_graph`), far smaller
    reads_graph: ClassVar[bool] = True
    #: whether meta-training on a multi-core CPU should run each backward beside the next
    #: forward (:class:`gnnopt.training.pipeline.BackwardPipeline`): worth it only when the
    #: rule's backward is about as long as the rest of an inner step, as
    #: ``benchmarks/meta_train_throughput.py`` measures (pna: yes; ff, lstm, rt, pna_lstm: no)
    pipeline_backward: ClassVar[bool] = False
    #: whether the rule reads its features only by rows (``feats[rows]``, ``feats.shape``, as
    #: the graph encoder and the head do), so that an optimizer step may hand it a
    #: :class:`~gnnopt.features.LazyFeatures` instead of the whole table (pna: yes)
    reads_features_by_rows: ClassVar[bool] = False
    #: whether :meth:`embed` returns a table that nothing else holds, so that an optimizer step
    #: may project it through the head's first layer in place (pna, rt, pna_lstm: yes)
    owns_embedding: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        super().__init__()
        defaults = {**UPDATE_FORM_DEFAULTS, **SCALE_DEFAULTS, **self.defaults}
        unknown = set(config) - set(defaults)
        if unknown:
            raise ValueError(f"Unknown option(s) {sorted(unknown)} for rule '{self.name}'; "
                             f"valid: {sorted(defaults)}")
        merged = {**defaults, **config}
        for key, value in merged.items():
            default = defaults[key]
            if isinstance(default, int) and not isinstance(default, bool):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"Invalid {key}: {value!r} (a positive integer is required)")
            elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"Invalid {key}: {value!r} (a number is required)")
        if not merged["update_scale"] > 0:
            raise ValueError(f"Invalid update_scale: {merged['update_scale']}")
        for key in ("fan_in_power", "depth_power"):
            if not math.isfinite(merged[key]):
                raise ValueError(f"Invalid {key}: {merged[key]}")
        if not 0 <= merged["nominal_blend"] <= 1:
            raise ValueError(f"Invalid nominal_blend: {merged['nominal_blend']} (0 <= it <= 1)")
        if not 0 < merged["anneal_fraction"] <= 1:
            raise ValueError(f"Invalid anneal_fraction: {merged['anneal_fraction']} (0 < it <= 1)")
        hidden = merged["scale_hidden"]
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0):
            raise ValueError(f"Invalid scale_hidden: {hidden!r} (None, or an integer >= 0)")
        json.dumps(merged)  # config must be JSON-able
        self.config: dict[str, Any] = merged
        self.scale = ScaleModule(hidden) if hidden is not None else None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # a rule pickled before an update-form option existed gets its default (no change)
        self.config = {**UPDATE_FORM_DEFAULTS, **SCALE_DEFAULTS, **self.config}
        self.__dict__.setdefault("scale", None)

    # -- the graph this rule expects -------------------------------------------------
    @property
    def graph_options(self) -> dict[str, int]:
        """Keyword arguments for :func:`~gnnopt.graph.build_neural_graph`."""
        return {
            "max_kernel_size": self.config.get("max_kernel_size", 5),
            "role_dim": self.config.get("role_dim", 8),
        }

    @property
    def node_input_size(self) -> int:
        return FEATURE_SIZE + role_features(self.graph_options["role_dim"])

    @property
    def edge_input_size(self) -> int:
        return FEATURE_SIZE * self.graph_options["max_kernel_size"] ** 2

    def init_state(self, graph: NeuralGraph, device: torch.device) -> RuleState:
        """The rule's recurrent state before the first step (``None`` if stateless)."""
        return None

    # -- the update: the graph part (context) and the per-element part (readout) --------
    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor | None, RuleState]:
        """The graph part of the rule: a table of embeddings, one row per row of
        :meth:`readout_rows` (``None`` for a rule that reads no graph), and the new state.

        Shapes: feats ``[P, FEATURE_SIZE]`` -> (``[R, E]`` or ``None``, state).
        """
        return None, state

    def readout_rows(self, graph: NeuralGraph) -> Tensor:
        """Row of :meth:`embed`'s table that each element reads (``[P]``): its edge or node."""
        return graph.readout_index

    def context(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor | None, RuleState]:
        """What the per-element head reads of the graph: :meth:`embed`'s table through the
        head's first layer (``[R, head_hidden]``, or ``None``), and the new state. The
        optimizer may keep it for several steps (``GNNOptimizer(graph_every=K)``)."""
        table, state = self.embed(feats, graph, state)
        return self.head.project(table, in_place=self.owns_embedding), state

    def readout(self, feats: Tensor, context: Tensor | None, graph: NeuralGraph) -> Tensor:
        """Direction and magnitude of every element from its own features and the context.

        Shapes: feats ``[P, FEATURE_SIZE]`` -> ``[P, 2]``.
        """
        return self.head.apply(feats, context, None if context is None else self.readout_rows(graph))

    def forward(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        """Shapes: feats ``[P, FEATURE_SIZE]`` -> (``[P, 2]`` direction/magnitude, new state)."""
        context, state = self.context(feats, graph, state)
        return self.readout(feats, context, graph), state

    # -- checkpoints -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> UpdateRule:
        """Load a rule from a bundled name, a local directory or a Hub repo id, in eval mode.

        Called on :class:`UpdateRule` it builds whichever registered rule ``config.json``
        names; called on a subclass, the checkpoint must hold that rule.
        """
        directory = hub.resolve(name_or_path, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only)
        return cls.from_checkpoint_dir(directory)

    @classmethod
    def from_checkpoint_dir(cls, directory: str | os.PathLike) -> UpdateRule:
        """Rebuild a rule from ``config.json`` and load ``model.safetensors`` strictly."""
        meta, tensors = hub.read_checkpoint(directory)
        config_path = Path(directory) / hub.CONFIG_NAME
        try:
            rule_cls = get_rule_class(meta["rule"])
            if cls is not UpdateRule and not issubclass(rule_cls, cls):
                raise ValueError(f"it holds a '{meta['rule']}' rule, not a '{cls.name}' rule")
            rule = rule_cls(**meta["config"])
        except (ValueError, TypeError) as err:
            raise ValueError(f"{config_path}: {err}") from err
        expected = rule.state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(
                f"{Path(directory) / hub.WEIGHTS_NAME}: weights do not match the '{rule.name}' rule of "
                f"{config_path.name} (missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]})"
            )
        rule.load_state_dict(tensors)
        rule.eval()
        return rule

    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card: str | None = None,
                        extra: dict[str, Any] | None = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` + ``README.md`` to a directory;
        ``extra`` adds JSON-able entries to ``config.json`` (e.g. the training options)."""
        meta = {"rule": self.name, "config": self.config, **(extra or {})}
        card = model_card if model_card is not None else self.default_card()
        hub.write_checkpoint(save_directory, meta, self.state_dict(), card)

    def push_to_hub(self, repo_id: str, *, model_card: str | None = None, **kwargs: Any) -> str:
        """Upload the three checkpoint files to a Hugging Face Hub model repo; returns the commit URL."""
        return hub.push_folder(repo_id, lambda folder: self.save_pretrained(folder, model_card=model_card), **kwargs)

    def default_card(self) -> str:
        """A model card that states the architecture and claims no evaluation."""
        params = sum(p.numel() for p in self.parameters())
        return (
            f"---\nlibrary_name: gnnopt\ntags: [learned-optimizer, gnnopt]\n---\n\n"
            f"# gnnopt rule `{self.name}`\n\n{params:,} weights; config:\n\n```json\n"
            f"{json.dumps(self.config, indent=2)}\n```\n\n"
            "Load with `GNNOptimizer.from_pretrained(path_or_repo_id, model.named_parameters())`.\n"
            "No evaluation is claimed by this card.\n"
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class Head(nn.Module):
    """The per-element MLP that maps ``[graph embedding | own features]`` to ``(d, m)``.

    The paper's FF optimizer is exactly this head with a zero-width embedding.

    Its first linear map is split as ``W [emb | x] = W_emb emb + W_x x``: when many
    elements share an embedding row (the kernel positions of an edge, all elements of a
    tensor), ``W_emb`` is applied to the table of distinct rows before they are gathered,
    which is the same function for a fraction of the work. Elements go through the MLP in
    chunks, so no ``[P, hidden]`` temporary is ever materialised.
    """

    #: elements per chunk: a ``[chunk, 64]`` float32 activation is 8 MiB
    chunk_size: ClassVar[int] = 32768

    def __init__(self, embed_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.net = mlp(embed_dim + FEATURE_SIZE, hidden, 2, layers)
        # start with small updates: an untrained rule should not blow the optimizee up
        with torch.no_grad():
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()

    def forward(self, feats: Tensor, embedding: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """Shapes: feats ``[P, F]``; embedding ``[P, E]``, or with ``index`` (``[P]``) a
        table ``[R, E]`` whose row ``index[i]`` belongs to element ``i`` -> ``[P, 2]``."""
        if index is not None or embedding is None:
            return self.apply(feats, self.project(embedding), index)
        first, rest = self.net[0], self.net[1:]
        emb_weight, own_weight = first.weight[:, : self.embed_dim], first.weight[:, self.embed_dim:]
        out = _Rows(feats)
        for rows in out.chunks(self.chunk_size):
            shared = F.linear(embedding[rows], emb_weight, first.bias)
            out.put(rows, rest(shared.addmm_(feats[rows], own_weight.t())))  # a fresh tensor: in place is safe
        return out.joined()

    def project(self, table: Tensor | None, *, in_place: bool = False) -> Tensor | None:
        """What the head reads of the graph (``None`` without an embedding): the first
        layer's share of an embedding table, ``W_emb table + b``, computed once per distinct
        row; or, when the embedding is narrower than the head (a lean rule), the table itself,
        which :meth:`apply` projects per element: the smaller of the two to keep.

        ``in_place``: without autograd, a table as wide as the head may be overwritten with its
        projection, a chunk of rows at a time (the step then holds one such table, not two).

        Shapes: table ``[R, E]`` -> ``[R, hidden]``, or ``[R, E]`` when ``E < hidden``.
        """
        if table is None or self.keeps_table:
            return table
        first = self.net[0]
        weight = first.weight[:, : self.embed_dim]
        if in_place and not torch.is_grad_enabled() and table.shape[1] == weight.shape[0]:
            for start in range(0, table.shape[0], self.chunk_size):
                rows = table[start: start + self.chunk_size]
                rows.copy_(F.linear(rows, weight, first.bias))
            return table
        return F.linear(table, weight, first.bias)

    @property
    def keeps_table(self) -> bool:
        """Whether :meth:`project` keeps the embedding table as it is (``E < hidden``)."""
        return 0 < self.embed_dim < self.net[0].out_features

    def apply(self, feats: Tensor, projected: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """The head on each element's own features and its row ``index[i]`` of a
        :meth:`project`-ed table (or the bias alone without one).

        Shapes: feats ``[P, F]``; projected ``[R, hidden]`` (or ``[R, E]``, see
        :meth:`project`); index ``[P]`` -> ``[P, 2]``.
        """
        first, rest = self.net[0], self.net[1:]
        own_weight = first.weight[:, self.embed_dim:]
        out = _Rows(feats)
        for rows in out.chunks(self.chunk_size):
            if projected is None:
                hidden = F.linear(feats[rows], own_weight, first.bias)
            elif self.keeps_table:
                hidden = torch.cat([projected.index_select(0, index[rows]), feats[rows]], dim=1)
                hidden = F.linear(hidden, first.weight, first.bias)
            else:
                hidden = projected.index_select(0, index[rows]).addmm_(feats[rows], own_weight.t())
            out.put(rows, rest(hidden))
        return out.joined()


class _Rows:
    """The head's ``[P, 2]`` output, gathered chunk by chunk: joined at the end under
    autograd, written into one table without it (never the chunks and their join at once)."""

    def __init__(self, feats: Tensor) -> None:
        self.size, self.dtype, self.device = feats.shape[0], feats.dtype, feats.device
        self.table = None if torch.is_grad_enabled() else feats.new_empty(self.size, 2)
        self.parts: list[Tensor] = []

    def chunks(self, chunk_size: int) -> list[slice]:
        return [slice(start, start + chunk_size) for start in range(0, self.size, chunk_size)]

    def put(self, rows: slice, values: Tensor) -> None:
        if self.table is None:
            self.parts.append(values)
        else:
            self.table[rows] = values

    def joined(self) -> Tensor:
        if self.table is not None:
            return self.table
        if not self.parts:
            return torch.zeros(0, 2, dtype=self.dtype, device=self.device)
        return torch.cat(self.parts) if len(self.parts) > 1 else self.parts[0]
