"""Which parameters are the layers of the neural graph: the layout pass of ``build_neural_graph``.

A *layer* is a weight ``[out, in]`` (Linear) or ``[out, in, kh, kw]`` (Conv2d, groups = 1),
followed by 1-D parameters of size ``out`` that live on its output nodes (its bias, norm
scales and shifts). Layers chain in declaration order: a layer whose ``in`` equals the
previous layer's ``out`` reads that layer's output nodes; any other starts a new chain.
Everything else is *fallback* (optimized by the rule's head alone).

With module types (:func:`infer_kinds`) the reading is exact. Without them (names and
shapes only) these heuristics give the same result for the common cases:

* only a parameter whose leaf name is exactly ``weight`` is a layer weight, so recurrent
  weights (``weight_ih_l0``), attention projections (``in_proj_weight``) fall back;
* a weight whose own ``<prefix>.bias`` is not of size ``out`` is not a Linear/Conv2d (a
  ConvTranspose2d weight is ``[in, out/groups, kh, kw]``): it falls back, bias included;
* a conv whose ``in`` differs from the ``out`` of the weight before it but divides it, and
  is no branch (its ``in`` is neither an earlier layer's ``out``, like a ResNet shortcut,
  nor an earlier chain's input width > 1, like a second input stream), is likely grouped
  or depthwise: it falls back, its bias with it;
* a 1-D parameter joins the current layer only as that layer's own ``<prefix>.bias`` or as
  a norm-like ``<module>.weight`` / ``<module>.bias`` of a module without larger weights.

Still ambiguous without the module: an ``nn.Embedding`` (read as a Linear), a
ConvTranspose2d without bias or with ``in == out`` channels, a grouped conv that looks
like a branch (or follows a layer of unknown width), a branch that looks grouped. With
or without modules, a layer declared before the layer that feeds it splits the chain;
such layouts are reported in :attr:`Plan.notes`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

#: Module categories a caller may attach to each parameter (``None``: infer from name/shape).
LAYER, NORM, OTHER = "layer", "norm", "other"


def infer_kinds(model: nn.Module) -> dict[str, str]:
    """Category of each named parameter of ``model`` from the module that owns it.

    Only ``nn.Linear`` and ungrouped ``nn.Conv2d`` are layers; modules whose parameters are
    all 1-D (BatchNorm, LayerNorm, GroupNorm, ...) are norms; everything else (recurrent,
    transposed, grouped or depthwise convolutions, embeddings, attention) is ``other``
    and falls back to the rule's head.
    """
    kinds = {}
    for module_name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            kind = LAYER
        elif all(p.dim() == 1 for _, p in own):
            kind = NORM  # per-channel scales/shifts
        else:
            kind = OTHER
        for name, _ in own:
            kinds[f"{module_name}.{name}" if module_name else name] = kind
    return kinds


@dataclasses.dataclass
class Layer:
    param: int
    out_nodes: range
    in_nodes: range
    chain: int
    depth: int


@dataclasses.dataclass
class Plan:
    """The result of :func:`plan_layers`: node count, layers in order, attachments, fallback."""

    num_nodes: int
    layers: list[Layer]
    attached: dict[int, Layer]  # 1-D parameter index -> the layer whose output nodes it joins
    fallback: list[int]
    notes: list[str]  # layouts that are probably read wrong (declaration order)


def _split(name: str) -> tuple[str, str]:
    prefix, _, leaf = name.rpartition(".")
    return prefix, leaf


def _is_layer_weight(name: str, shape: tuple[int, ...], kind: str | None, max_kernel: int) -> bool:
    if kind not in (None, LAYER) or len(shape) not in (2, 4):
        return False
    if len(shape) == 4 and (shape[2] > max_kernel or shape[3] > max_kernel):
        return False
    return kind == LAYER or _split(name)[1] == "weight"


def plan_layers(
    names: Sequence[str], shapes: Sequence[tuple[int, ...]], kinds: Sequence[str | None], max_kernel: int
) -> Plan:
    """Assign every parameter to a layer (edges), a layer's nodes, or the fallback."""
    split = [_split(n) for n in names]
    # modules (by name prefix) owning a parameter of 2+ dims: their 1-D parameters are
    # theirs (a bias), never a norm's
    weighted = {split[i][0] for i, s in enumerate(shapes) if len(s) >= 2}
    own_bias = {p: shapes[i][0] for i, (p, leaf) in enumerate(split) if leaf == "bias" and len(shapes[i]) == 1}
    num_nodes, chain = 0, -1
    layers: list[Layer] = []
    attached: dict[int, Layer] = {}
    fallback: list[int] = []
    notes: list[str] = []
    current: Layer | None = None
    last_out: int | None = None  # output width of the latest weight, where its shape tells it
    for i, (name, shape, kind) in enumerate(zip(names, shapes, kinds)):
        prefix, leaf = split[i]
        is_weight = _is_layer_weight(name, shape, kind, max_kernel)
        if is_weight and not (kind is None and _unmodelled(prefix, shape, last_out, layers, own_bias)):
            out_dim, in_dim = shape[0], shape[1]
            if current is not None and len(current.out_nodes) == in_dim:
                in_nodes, depth = current.out_nodes, current.depth + 1
            else:
                if current is not None:
                    notes += _order_note(i, names, shapes, kinds, layers)
                chain += 1
                in_nodes, depth = range(num_nodes, num_nodes + in_dim), 1
                num_nodes += in_dim
            current = Layer(i, range(num_nodes, num_nodes + out_dim), in_nodes, chain, depth)
            num_nodes += out_dim
            layers.append(current)
        elif (
            len(shape) == 1 and kind != OTHER and current is not None
            and shape[0] == len(current.out_nodes)
            and (kind is not None or _joins(prefix, leaf, split[current.param][0], weighted))
        ):
            attached[i] = current
        else:
            fallback.append(i)
        if len(shape) >= 2:  # a grouped or transposed conv has a known width; an LSTM has none
            last_out = own_bias.get(prefix, shape[0]) if is_weight else None
    return Plan(num_nodes, layers, attached, fallback, notes)


def _unmodelled(prefix: str, shape: tuple[int, ...], prev_out: int | None, layers: list[Layer],
                own_bias: dict[str, int]) -> bool:
    """Whether a ``*.weight`` is, by its shapes, a layer the graph does not model.

    ``prev_out``: the output width of the weight declared just before (``None``: unknown).
    """
    if own_bias.get(prefix, shape[0]) != shape[0]:
        return True  # not a Linear/Conv2d: e.g. a ConvTranspose2d, bias of size out = shape[1]
    if len(shape) != 4 or prev_out is None:
        return False
    in_dim = shape[1]
    if not 0 < in_dim < prev_out or prev_out % in_dim:
        return False
    groups = prev_out // in_dim  # a grouped conv's weight is [out, in / groups, kh, kw]
    # not when it could be a branch: a shortcut reading an earlier layer's output, or a
    # second input stream as wide as an earlier chain's input (depthwise: width 1 is no hint)
    branch = any(len(layer.out_nodes) == in_dim or (layer.depth == 1 and len(layer.in_nodes) == in_dim > 1)
                 for layer in layers)
    return shape[0] % groups == 0 and not branch


def _joins(prefix: str, leaf: str, layer_prefix: str, weighted: set[str]) -> bool:
    """Whether an unlabelled 1-D parameter belongs on the current layer's output nodes."""
    if prefix == layer_prefix:
        return leaf == "bias"
    return prefix not in weighted and leaf in ("weight", "bias")


def _order_note(i: int, names: Sequence[str], shapes: Sequence[tuple[int, ...]], kinds: Sequence[str | None],
                layers: list[Layer]) -> list[str]:
    """A note when a layer starting a new chain could feed a chain declared before it."""
    out_dim = shapes[i][0]
    for layer in layers:
        if layer.depth == 1 and len(layer.in_nodes) == out_dim:
            first = names[layer.param]
            # read from names alone, the earlier "layer" may be an embedding
            guess = f" (if {first} is no Linear/Conv2d, pass the module itself)" if kinds[layer.param] is None else ""
            return [
                f"{names[i]} ({out_dim} outputs) starts a new chain but could feed {first}, declared "
                f"before it: layers chain in declaration order, so declare them in forward order{guess}"
            ]
    return []
