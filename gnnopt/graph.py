"""The neural graph of a model: neurons are nodes, weights are edges.

Kofinas et al., "Graph Neural Networks for Learning Equivariant Representations of Neural
Networks" (ICLR 2024), section 2: every input feature/channel and every neuron/output
channel is a node; every (in, out) pair of a layer is an edge carrying that weight (a conv
edge carries its whole kernel, zero-padded to ``max_kernel_size ** 2`` positions), plus a
reverse edge so messages flow both ways. Biases and norm scales/shifts live on the nodes.

Layers are inferred from the ordered parameters (:mod:`gnnopt._layout`): a weight
``[out, in]`` (Linear) or ``[out, in, kh, kw]`` (Conv2d) followed by 1-D parameters of size
``out`` (its bias, norm scales and shifts). A layer chains onto the previous one when its
``in`` equals the previous ``out`` (conv -> global average pool -> linear chains on
channels); otherwise it starts a new chain with fresh input nodes. Anything else
(embeddings, attention projections, recurrent, transposed, grouped or depthwise layers,
3-D tensors, kernels larger than ``max_kernel_size``) is *fallback*: it is still
optimized, by the rule's head alone with a zero graph embedding.

:func:`build_neural_graph` is a pure function of the parameter layout (names, shapes,
kinds): a training step only gathers features into the precomputed index tensors. Its
result is shared while anything holds it (a weak cache), and freed with the last holder.
No dense ``N x N`` tensor is ever built.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

# the layout pass lives in _layout; its kinds and infer_kinds are part of this module's API
from ._layout import LAYER, NORM, OTHER, infer_kinds, plan_layers  # noqa: F401


@dataclasses.dataclass(frozen=True)
class NeuralGraph:
    """Index tensors that turn flat per-element features into a graph and back.

    Elements are numbered by concatenating the flattened parameters in order.

    The per-edge index tensors (``edge_index``, ``message_pairs``, ``edge_elem_index``,
    ``edge_elem_slot``: 8 to 32 bytes per weight connection each) are built from the layer
    blocks on first use and kept: a rule that reads the graph by blocks (``pna``) never builds
    them; nor ``tensor_index`` (8 bytes per element), which only ``lstm`` reads.

    Shapes:
        edge_index: ``[2, 2E]`` (source, target); forward edges first, then reverse ones.
        node_roles: ``[N, role_features]`` fixed, width-independent role encodings.
        edge_elem_index: ``[W]`` element of each graph weight; edge_elem_slot: ``[W]``
            its row in the ``[E * kernel_positions]`` edge-feature table.
        node_elem_index: ``[A]`` elements attached to nodes (biases, norm params);
            node_elem_node: ``[A]`` their node; node_inv_count: ``[N, 1]``.
        readout_index: ``[P]`` row of every element in ``cat([edge_emb (E), node_emb (N),
            zero row])``; tensor_index: ``[P]`` parameter tensor of every element.
        message_pairs: ``[2E, 2]`` (target, ``N`` + source) of every directed edge: its two
            rows in a ``[2N, H]`` table of per-target and per-source node projections.
        in_degree: ``[N]`` directed edges into each node (the number of messages it gets).
        edge_blocks: one ``(first edge, edges, first element, kh, kw)`` per layer; the
            ``kh * kw`` elements of each of its edges are consecutive.
        node_blocks: one ``(first edge, first source node, sources, first target node,
            targets)`` per layer: its edges join every source to every target, numbered
            ``first edge + target * sources + source``, so any per-edge table of a layer is a
            dense ``[targets, sources, ...]`` view (reductions over neighbours need no scatter).
        notes: layouts that are probably read wrong (a layer declared before the layer
            that feeds it), for the optimizer to warn about.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    num_nodes: int
    num_edges: int
    num_elements: int
    kernel_positions: int
    fallback: tuple[str, ...]
    node_roles: Tensor
    node_elem_index: Tensor
    node_elem_node: Tensor
    node_inv_count: Tensor
    readout_index: Tensor
    in_degree: Tensor
    edge_blocks: tuple[tuple[int, int, int, int, int], ...]
    node_blocks: tuple[tuple[int, int, int, int, int], ...]
    notes: tuple[str, ...] = ()
    #: elements per chunk when per-element features are read into per-edge tables
    chunk_elements: ClassVar[int] = 65536

    @functools.cached_property
    def edge_index(self) -> Tensor:
        forward = [torch.stack([torch.arange(sources, device=self.device).repeat(targets) + source_start,
                                torch.arange(targets, device=self.device).repeat_interleave(sources) + target_start])
                   for _, source_start, sources, target_start, targets in self.node_blocks]
        forward = torch.cat(forward, dim=1) if forward else torch.zeros(2, 0, dtype=torch.long, device=self.device)
        return torch.cat([forward, forward.flip(0)], dim=1)

    @functools.cached_property
    def message_pairs(self) -> Tensor:
        return message_pairs(self.edge_index, self.num_nodes)

    @functools.cached_property
    def edge_elem_index(self) -> Tensor:
        parts = [torch.arange(first, first + edges * kh * kw, device=self.device)
                 for _, edges, first, kh, kw in self.edge_blocks]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=self.device)

    @functools.cached_property
    def edge_elem_slot(self) -> Tensor:
        k = math.isqrt(self.kernel_positions)
        parts = []
        for first_edge, edges, _, kh, kw in self.edge_blocks:
            rows = torch.arange(kh, device=self.device).repeat_interleave(kw) + (k - kh) // 2
            cols = torch.arange(kw, device=self.device).repeat(kh) + (k - kw) // 2
            ids = torch.arange(first_edge, first_edge + edges, device=self.device)
            parts.append((ids.unsqueeze(1) * self.kernel_positions + rows * k + cols).reshape(-1))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=self.device)

    @property
    def num_tensors(self) -> int:
        return len(self.shapes)

    @property
    def device(self) -> torch.device:
        return self.node_roles.device

    @functools.cached_property
    def tensor_index(self) -> Tensor:
        """``[P]`` the parameter tensor of every element (built on first use: ``lstm`` reads it)."""
        sizes = torch.tensor([math.prod(s) for s in self.shapes], dtype=torch.long, device=self.device)
        return torch.repeat_interleave(torch.arange(len(self.shapes), device=self.device), sizes)

    def to(self, device: torch.device | str) -> NeuralGraph:
        """A copy with every index tensor on ``device`` (``self`` if already there, as
        ``Tensor.to``: so a CPU user shares the cached graph instead of a copy)."""
        if self.device == torch.device(device):
            return self
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def node_features(self, feats: Tensor) -> Tensor:
        """Mean features of the elements attached to each node (zero for input nodes).

        Shapes:
            feats: ``[P, F]`` -> ``[N, F]``.
        """
        out = feats.new_zeros(self.num_nodes, feats.shape[1])
        out.index_add_(0, self.node_elem_node, feats[self.node_elem_index])
        return out * self.node_inv_count.to(feats.dtype)

    def edge_features(self, feats: Tensor) -> Tensor:
        """Kernel features of each forward edge, zero-padded (centred) to the max kernel.

        Shapes:
            feats: ``[P, F]`` -> ``[E, kernel_positions * F]``.
        """
        table = feats.new_zeros(self.num_edges * self.kernel_positions, feats.shape[1])
        table[self.edge_elem_slot] = feats[self.edge_elem_index]
        return table.view(self.num_edges, self.kernel_positions * feats.shape[1])

    def edge_linear(self, feats: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                    out: Tensor | None = None) -> Tensor:
        """``F.linear(self.edge_features(feats), weight, bias)`` without the padded table.

        Each layer's edges read their consecutive elements as one ``[edges, kh * kw * F]``
        view and meet only the weight columns of the kernel positions they occupy: a 3x3
        conv edge uses 9 of the 25 positions, a linear edge 1, the rest are zeros. The rows
        are read a chunk of at most :attr:`chunk_elements` elements at a time, so ``feats``
        may compute its rows on demand (:class:`~gnnopt.features.LazyFeatures`).

        ``out``: without autograd, an ``[E, H]`` table to write into (else a new one).

        Shapes:
            feats: ``[P, F]``; weight: ``[H, kernel_positions * F]`` -> ``[E, H]``.
        """
        k = math.isqrt(self.kernel_positions)
        weight = weight.view(weight.shape[0], self.kernel_positions, feats.shape[1])
        # one output table written chunk by chunk (the blocks are consecutive edges)
        if torch.is_grad_enabled():
            out = None
        elif out is None:
            out = feats.new_empty(self.num_edges, weight.shape[0])
        parts = []
        for first_edge, edges, first_elem, kh, kw in self.edge_blocks:
            w = weight[:, _centred_slots(kh, kw, k)].flatten(1)
            step = max(1, self.chunk_elements // (kh * kw))
            for start in range(0, edges, step):
                n = min(step, edges - start)
                begin = first_elem + start * kh * kw
                block = feats[begin: begin + n * kh * kw].view(n, -1)
                if out is None:
                    parts.append(F.linear(block, w, bias))
                    continue
                rows = out[first_edge + start: first_edge + start + n]
                if bias is None:
                    torch.mm(block, w.t(), out=rows)
                else:
                    torch.addmm(bias, block, w.t(), out=rows)
        if out is not None:
            return out
        if not parts:
            return feats.new_zeros(0, weight.shape[0])
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def readout_table(self, edge_emb: Tensor, node_emb: Tensor, table: Tensor | None = None) -> Tensor:
        """The table that :attr:`readout_index` indexes: edges, nodes, then a zero row.

        ``table``: an ``[E + N + 1, H]`` table whose first rows ``edge_emb`` may already be
        (written there without autograd); the rest is then filled in, with no copy of the edges.

        Shapes:
            edge_emb: ``[E, H]``; node_emb: ``[N, H]`` -> ``[E + N + 1, H]``.
        """
        if table is not None and edge_emb.data_ptr() == table.data_ptr() and not torch.is_grad_enabled():
            table[self.num_edges: -1] = node_emb
            table[-1] = 0.0
            return table
        zero = node_emb.new_zeros(1, node_emb.shape[1])
        return torch.cat([edge_emb, node_emb, zero], dim=0)


def message_pairs(edge_index: Tensor, num_nodes: int) -> Tensor:
    """:attr:`NeuralGraph.message_pairs` of an ``edge_index``: (target, ``num_nodes`` + source)."""
    return torch.stack([edge_index[1], edge_index[0] + num_nodes], dim=1)


@lru_cache(maxsize=None)
def _centred_slots(kh: int, kw: int, k: int) -> list[int] | slice:
    """Positions of a ``kh x kw`` kernel centred in a ``k x k`` grid (a slice if contiguous)."""
    top, left = (k - kh) // 2, (k - kw) // 2
    slots = [(top + r) * k + left + c for r in range(kh) for c in range(kw)]
    if slots == list(range(slots[0], slots[-1] + 1)):
        return slice(slots[0], slots[-1] + 1)
    return slots


def wave_encoding(x: Tensor, dim: int) -> Tensor:
    """Sinusoidal encoding of integer positions, independent of any width.

    Shapes:
        x: ``[N]`` -> ``[N, dim]`` (dim even).
    """
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, dtype=torch.float32) / max(dim // 2 - 1, 1))
    angles = x.to(torch.float32).unsqueeze(1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def role_features(role_dim: int) -> int:
    """Width of :attr:`NeuralGraph.node_roles` for a given wave dimension."""
    return 4 * role_dim + 2


def build_neural_graph(
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    kinds: Sequence[str | None] | None = None,
    *,
    max_kernel_size: int = 5,
    role_dim: int = 8,
) -> NeuralGraph:
    """Build (or share a live copy of) the neural graph of an ordered parameter layout.

    Args:
        names: parameter names in order (used to recognise ``*.weight`` and in warnings).
        shapes: parameter shapes in the same order.
        kinds: per-parameter module category (``"layer"``, ``"norm"``, ``"other"``) or
            ``None`` to infer from names and shapes.
        max_kernel_size: conv kernels are centred in a ``K x K`` grid of positions.
        role_dim: width of each sinusoidal role encoding.
    """
    if len(names) != len(shapes):
        raise ValueError(f"got {len(names)} names for {len(shapes)} shapes")
    kinds = tuple(kinds) if kinds is not None else (None,) * len(names)
    if len(kinds) != len(names):
        raise ValueError(f"got {len(kinds)} kinds for {len(names)} parameters")
    if max_kernel_size < 1 or role_dim < 2 or role_dim % 2:
        raise ValueError(f"Invalid max_kernel_size={max_kernel_size} or role_dim={role_dim} (must be even)")
    key = (tuple(names), tuple(tuple(int(d) for d in s) for s in shapes), kinds, max_kernel_size, role_dim)
    graph = _graphs.get(key)
    if graph is None:
        graph = _graphs[key] = _build(*key)
    return graph


#: graphs by layout, shared while some optimizer (or meta-training optimizee) holds them: a
#: graph of a large model is hundreds of MiB, so none outlives its last user
_graphs: weakref.WeakValueDictionary[tuple, NeuralGraph] = weakref.WeakValueDictionary()


def _build(names, shapes, kinds, max_kernel_size, role_dim) -> NeuralGraph:
    K2 = max_kernel_size * max_kernel_size
    plan = plan_layers(names, shapes, kinds, max_kernel_size)
    num_nodes, layers, attached, fallback = plan.num_nodes, plan.layers, plan.attached, plan.fallback

    # role encodings: layer index from the input and from the output of each chain,
    # and identities of input / output neurons (Kofinas et al., sec. 3: positional
    # encodings only where the permutation symmetry is broken)
    chain_depth = {}
    for layer in layers:
        chain_depth[layer.chain] = max(chain_depth.get(layer.chain, 0), layer.depth)
    from_input = torch.zeros(num_nodes, dtype=torch.long)
    from_output = torch.zeros(num_nodes, dtype=torch.long)
    in_id = torch.full((num_nodes,), -1, dtype=torch.long)
    out_id = torch.full((num_nodes,), -1, dtype=torch.long)
    for layer in layers:
        total = chain_depth[layer.chain]
        if layer.depth == 1:
            nodes = torch.arange(layer.in_nodes.start, layer.in_nodes.stop)
            from_output[nodes] = total
            in_id[nodes] = torch.arange(len(nodes))
        nodes = torch.arange(layer.out_nodes.start, layer.out_nodes.stop)
        from_input[nodes] = layer.depth
        from_output[nodes] = total - layer.depth
        if layer.depth == total:
            out_id[nodes] = torch.arange(len(nodes))
    is_in, is_out = (in_id >= 0), (out_id >= 0)
    node_roles = torch.cat(
        [
            wave_encoding(from_input, role_dim),
            wave_encoding(from_output, role_dim),
            wave_encoding(in_id.clamp_min(0), role_dim) * is_in.unsqueeze(1),
            wave_encoding(out_id.clamp_min(0), role_dim) * is_out.unsqueeze(1),
            is_in.unsqueeze(1).float(),
            is_out.unsqueeze(1).float(),
        ],
        dim=1,
    )

    sizes = [math.prod(s) for s in shapes]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    num_elements = offsets[-1]
    num_edges = sum(len(layer.out_nodes) * len(layer.in_nodes) for layer in layers)
    readout = torch.full((num_elements,), num_edges + num_nodes, dtype=torch.long)

    blocks, node_blocks = [], []
    in_degree = torch.zeros(num_nodes, dtype=torch.long)
    edge_base = 0
    for layer in layers:
        shape = shapes[layer.param]
        out_dim, in_dim = shape[0], shape[1]
        kh, kw = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
        # edge e = edge_base + o * in_dim + j carries weight[o, j, :, :]
        elems = torch.arange(offsets[layer.param], offsets[layer.param + 1])
        readout[elems] = torch.arange(edge_base, edge_base + out_dim * in_dim).repeat_interleave(kh * kw)
        blocks.append((edge_base, out_dim * in_dim, offsets[layer.param], kh, kw))
        node_blocks.append((edge_base, layer.in_nodes.start, in_dim, layer.out_nodes.start, out_dim))
        in_degree[layer.out_nodes.start: layer.out_nodes.start + out_dim] += in_dim  # forward messages
        in_degree[layer.in_nodes.start: layer.in_nodes.start + in_dim] += out_dim  # reverse ones
        edge_base += out_dim * in_dim

    node_elem_index, node_elem_node = [], []
    for i, layer in attached.items():
        elems = torch.arange(offsets[i], offsets[i + 1])
        nodes = torch.arange(layer.out_nodes.start, layer.out_nodes.stop)
        node_elem_index.append(elems)
        node_elem_node.append(nodes)
        readout[elems] = num_edges + nodes
    node_elem_node_t = _cat(node_elem_node)
    count = torch.zeros(num_nodes).index_add_(0, node_elem_node_t, torch.ones(len(node_elem_node_t)))

    return NeuralGraph(
        names=tuple(names),
        shapes=shapes,
        num_nodes=num_nodes,
        num_edges=num_edges,
        num_elements=num_elements,
        kernel_positions=K2,
        fallback=tuple(names[i] for i in fallback),
        node_roles=node_roles,
        node_elem_index=_cat(node_elem_index),
        node_elem_node=node_elem_node_t,
        node_inv_count=(1.0 / count.clamp_min(1.0)).unsqueeze(1),
        readout_index=readout,
        in_degree=in_degree,
        edge_blocks=tuple(blocks),
        node_blocks=tuple(node_blocks),
        notes=tuple(plan.notes),
    )


def layout_graph(names: Sequence[str], shapes: Sequence[Sequence[int]], *, max_kernel_size: int = 5,
                 role_dim: int = 8) -> NeuralGraph:
    """The record of a parameter layout for a rule that reads no graph (``ff``, ``lstm``):
    names, shapes and each element's tensor, with no nodes or edges (so no fallback either),
    at a fraction of :func:`build_neural_graph`'s memory on large models."""
    if len(names) != len(shapes):
        raise ValueError(f"got {len(names)} names for {len(shapes)} shapes")
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    sizes = [math.prod(s) for s in shapes]
    empty = torch.zeros(0, dtype=torch.long)
    return NeuralGraph(
        names=tuple(names), shapes=shapes, num_nodes=0, num_edges=0, num_elements=sum(sizes),
        kernel_positions=max_kernel_size * max_kernel_size, fallback=(),
        node_roles=torch.zeros(0, role_features(role_dim)),
        node_elem_index=empty, node_elem_node=empty, node_inv_count=torch.zeros(0, 1), readout_index=empty,
        in_degree=empty, edge_blocks=(), node_blocks=(), notes=(),
    )


def _cat(parts: list[Tensor]) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
