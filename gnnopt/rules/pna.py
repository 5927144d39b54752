"""``pna``: the neural-graph GNN of Kofinas et al. 2024 ("NG-GNN", sec. 3 and 4.3).

Principal neighbourhood aggregation (Corso et al. 2020) with aggregators mean/min/max/std
and scalers identity/amplification, FiLM-conditioned messages and edge updates:

    m_ij = phi_scale(e_ij) * phi_m([v_i, v_j]) + phi_shift(e_ij)
    v_i <- LN(v_i + phi_u([v_i, PNA_j m_ij]))
    e_ij <- LN(e_ij + phi_e([v_i, e_ij, v_j]))

Each element's update comes from the FF head applied to its edge's (or node's) final
embedding concatenated with its own features.

"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import DegreeScalerAggregation

from ..graph import NeuralGraph, message_pairs
from ._aggr import pna_aggregate, pna_from_moments
from .base import Head, RuleState, UpdateRule, mlp

AGGREGATORS = ["mean", "min", "max", "std"]
SCALERS = ["identity", "amplification"]


class PNALayer(MessagePassing):
    """One PNA layer with FiLM messages and an edge update.

    Edge embeddings are shared by an edge and its reverse (``edge_attr`` has ``E`` rows
    while ``edge_index`` has ``2E`` columns, forward edges first). The first linear map of
    each MLP on a concatenation is split into per-node projections that are gathered
    afterwards, which is the same function at a fraction of the cost on wide layers.
    Per-edge work runs over chunks of :attr:`chunk_size` edges, both directions at once,
    so that its temporaries stay small and cache-resident; only the outputs are full size.

    Nodes are ``hidden`` wide; edges ``edge_hidden`` and messages ``message_hidden`` wide
    (both ``hidden`` by default, as in the paper): the per-edge widths set what the layer
    costs per weight connection, which is most of it on an MLP or a Transformer.

    Shapes:
        x: ``[N, H]``; edge_attr: ``[E, D]``; graph: the :class:`NeuralGraph` (or its
        ``edge_index``, ``[2, 2E]``) -> (``[N, H]``, ``[E, D]``).
    """

    #: edges per chunk of the per-edge computations (a ``[chunk, 64]`` float32 is 2 MiB)
    chunk_size: ClassVar[int] = 8192
    #: edges per chunk on a graph of dense layer blocks (``[chunk, 64]`` is 16 MiB)
    block_chunk_size: ClassVar[int] = 65536

    def __init__(self, hidden: int, reference_degree: int, edge_hidden: int | None = None,
                 message_hidden: int | None = None) -> None:
        # The degree normaliser is a buffer (saved in the checkpoint), not a function of
        # the layout the rule runs on, so a rule transfers across widths unchanged.
        deg = torch.zeros(reference_degree + 1, dtype=torch.long)
        deg[reference_degree] = 1
        # torch_geometric's module defines the aggregation (and holds the degree buffer);
        # aggregate() computes the same function in fewer ops (._aggr.pna_aggregate)
        super().__init__(aggr=DegreeScalerAggregation(AGGREGATORS, SCALERS, deg=deg), node_dim=0)
        edge = edge_hidden or hidden  # per-edge widths: what a step costs per weight connection
        message = message_hidden or hidden
        self.msg_target = nn.Linear(hidden, message)
        self.msg_source = nn.Linear(hidden, message, bias=False)
        self.msg_out = nn.Linear(message, message)
        self.film = nn.Linear(edge, 2 * message)
        self.node_update = mlp(hidden + len(AGGREGATORS) * len(SCALERS) * message, hidden, hidden, 2)
        self.edge_source = nn.Linear(hidden, edge)
        self.edge_self = nn.Linear(edge, edge, bias=False)
        self.edge_target = nn.Linear(hidden, edge, bias=False)
        self.edge_out = nn.Linear(edge, edge)
        self.node_norm = nn.LayerNorm(hidden)
        self.edge_norm = nn.LayerNorm(edge)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, edge_attr: Tensor, graph: NeuralGraph | Tensor, *,
                in_place: bool = False) -> tuple[Tensor, Tensor]:
        """``in_place``: without autograd, the new edge embeddings may overwrite ``edge_attr``
        (a caller that drops the old ones saves a table of ``E x D``)."""
        # by blocks, except a graph of one edge chunk under autograd (meta-training on task 17),
        # whose backward is faster as a few per-edge ops (benchmarks/pna_layer_paths.py)
        if isinstance(graph, NeuralGraph) and graph.node_blocks and not (
                torch.is_grad_enabled() and graph.num_edges < self.chunk_size):
            return self._forward_blocks(x, edge_attr, graph, in_place)
        return self._forward_edges(x, edge_attr, graph)

    def _forward_blocks(self, x: Tensor, edge_attr: Tensor, graph: NeuralGraph,
                        in_place: bool = False) -> tuple[Tensor, Tensor]:
        """The layer on a graph of dense layer blocks (:attr:`NeuralGraph.node_blocks`): each
        block's messages are a ``[targets, sources, M]`` broadcast of per-node projections,
        reduced over neighbours in place of a scatter, a chunk of target rows at a time, so
        that no per-message table of the whole graph is ever held."""
        msg_target, msg_source = self.msg_target(x), self.msg_source(x)
        partials = BlockPartials(_merged)  # [rows, 4, M] sum/sum sq/min/max per node
        for _, targets, sources, block in block_chunks(graph, edge_attr, self.block_chunk_size):
            scale, shift = self.film(block).chunk(2, dim=-1)  # [chunk targets, sources, M]
            forward = msg_target[targets].unsqueeze(1) + msg_source[sources].unsqueeze(0)
            reverse = msg_source[targets].unsqueeze(1) + msg_target[sources].unsqueeze(0)
            forward = torch.addcmul(shift, self.msg_out(self.act(forward)), scale)
            reverse = torch.addcmul(shift, self.msg_out(self.act(reverse)), scale)
            partials.to_targets(targets, _moments(forward, dim=1))  # to each target, from its sources
            partials.to_sources(sources, _moments(reverse, dim=0))  # to each source, from these targets
        aggregated = _combine(partials.done(), graph.in_degree, x.shape[0], x.new_empty(0, 4, msg_target.shape[1]),
                              self.aggr_module.avg_deg_log)
        x = self.node_norm(x + self.node_update(torch.cat([x, aggregated], dim=1)))
        edge_source, edge_target = self.edge_source(x), self.edge_target(x)
        # without autograd, written chunk by chunk into one table (the chunks are never held
        # twice), or over the old one (each chunk reads only its own rows of it); with
        # autograd, joined at the end (slice assignment would slow the backward)
        table = None
        if not torch.is_grad_enabled():
            table = edge_attr if in_place else edge_attr.new_empty(edge_attr.shape)
        chunks = []
        for rows, targets, sources, block in block_chunks(graph, edge_attr, self.block_chunk_size):
            # phi_e's first layer, W_s v_i + W_e e_ij + W_t v_j + b, on the edge from source i to target j
            update = edge_source[sources].unsqueeze(0) + edge_target[targets].unsqueeze(1) + F.linear(
                block, self.edge_self.weight)
            new = self.edge_norm(self.edge_out(self.act(update)) + block).flatten(0, 1)
            if table is None:
                chunks.append(new)
            else:
                table[rows] = new
        if table is not None or not chunks:
            return x, edge_attr if table is None else table
        return x, chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def _forward_edges(self, x: Tensor, edge_attr: Tensor, graph: NeuralGraph | Tensor) -> tuple[Tensor, Tensor]:
        """The layer on any edge list (a bare ``edge_index``): messages gathered per edge and
        scattered to their targets."""
        if isinstance(graph, Tensor):
            edge_index, pairs = graph, message_pairs(graph, x.shape[0])
            degree = torch.bincount(graph[1], minlength=x.shape[0])
        else:
            edge_index, pairs, degree = graph.edge_index, graph.message_pairs, graph.in_degree
        num_edges = edge_attr.shape[0]
        # phi_m([v_i, v_j]) with i the target, j the source: project the nodes, then sum
        # the target's and the source's rows per edge
        by_node = torch.cat([self.msg_target(x), self.msg_source(x)])
        chunks = []
        for rows in _chunks(num_edges, self.chunk_size):
            both = pairs if rows.stop - rows.start == num_edges else torch.cat(
                [pairs[rows], pairs[rows.start + num_edges: rows.stop + num_edges]])
            hidden = self.msg_out(self.act(_pair_sum(by_node, both)))  # [2 * chunk, H]
            # FiLM (Perez et al. 2018): an edge and its reverse share e_ij, so one
            # projection of the edge conditions both of its messages
            scale, shift = self.film(edge_attr[rows]).chunk(2, dim=1)
            chunks.append(torch.addcmul(shift, hidden.view(2, *scale.shape), scale))  # [2, chunk, M]
        if len(chunks) == 1:
            messages = chunks[0].flatten(0, 1)
        else:  # forward edges first, then reverse ones
            messages = torch.cat([c[0] for c in chunks] + [c[1] for c in chunks])
        aggregated = self.propagate(edge_index, messages=messages, degree=degree, size=(x.shape[0], x.shape[0]))
        x = self.node_norm(x + self.node_update(torch.cat([x, aggregated], dim=1)))
        # phi_e's first layer on a forward edge from source i to target j is
        # W_s v_i + W_e e_ij + W_t v_j + b; that edge's reverse has the pair (i, N + j),
        # which picks exactly those rows of [W_s x + b; W_t x]
        by_node = torch.cat([self.edge_source(x), self.edge_target(x)])
        new_edges = []
        for rows in _chunks(num_edges, self.chunk_size):
            edges = edge_attr[rows]
            update = _pair_sum(by_node, pairs[rows.start + num_edges: rows.stop + num_edges])
            # in place on fresh results that autograd does not need: one temporary less
            update.addmm_(edges, self.edge_self.weight.t())
            new_edges.append(self.edge_norm(self.edge_out(self.act(update)).add_(edges)))
        return x, new_edges[0] if len(new_edges) == 1 else torch.cat(new_edges)

    def message(self, messages: Tensor) -> Tensor:
        return messages

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Tensor | None = None, dim_size: int | None = None,
                  degree: Tensor | None = None) -> Tensor:
        """``self.aggr_module(inputs, index)``, computed by :func:`._aggr.pna_aggregate`."""
        if degree is None:
            degree = torch.bincount(index, minlength=dim_size or 0)
        return pna_aggregate(inputs, index, degree, self.aggr_module.avg_deg_log)


def block_chunks(graph: NeuralGraph, edge_attr: Tensor, size: int):
    """``(edge rows, target nodes, source nodes, edge_attr rows as [targets, sources, D])`` for
    chunks of about ``size`` edges: whole target rows of one layer block at a time, in edge order."""
    for first, source_start, sources, target_start, targets in graph.node_blocks:
        step = max(1, size // max(sources, 1))
        for t in range(0, targets, step):
            count = min(step, targets - t)
            rows = slice(first + t * sources, first + (t + count) * sources)
            yield (rows, slice(target_start + t, target_start + t + count),
                   slice(source_start, source_start + sources), edge_attr[rows].view(count, sources, -1))


class BlockPartials:
    """Per-node partial reductions over the chunks of :func:`block_chunks`, as ``(first node,
    partial)`` over consecutive nodes: one per chunk of targets, and for the sources of a block one
    running partial merged (``merge(a, b)``) over its target chunks, not one per chunk."""

    def __init__(self, merge: Callable[[Any, Any], Any]) -> None:
        self.merge = merge
        self.items: list[tuple[int, Any]] = []
        self._sources: tuple[slice, Any] | None = None

    def to_targets(self, targets: slice, partial: Any) -> None:
        self.items.append((targets.start, partial))

    def to_sources(self, sources: slice, partial: Any) -> None:
        if self._sources is not None and self._sources[0] == sources:
            self._sources = (sources, self.merge(self._sources[1], partial))
            return
        self._flush()
        self._sources = (sources, partial)

    def done(self) -> list[tuple[int, Any]]:
        self._flush()
        return self.items

    def _flush(self) -> None:
        if self._sources is not None:
            self.items.append((self._sources[0].start, self._sources[1]))
            self._sources = None


def _moments(messages: Tensor, dim: int) -> Tensor:
    """Sum, sum of squares, min and max over ``dim`` of a ``[a, b, M]`` block: ``[rows, 4, M]``."""
    return torch.stack([messages.sum(dim), messages.square().sum(dim), messages.amin(dim), messages.amax(dim)], 1)


def _merged(a: Tensor, b: Tensor) -> Tensor:
    """The moments (:func:`_moments`) of two sets of messages to the same nodes, joined."""
    return torch.stack([a[:, 0] + b[:, 0], a[:, 1] + b[:, 1], torch.minimum(a[:, 2], b[:, 2]),
                        torch.maximum(a[:, 3], b[:, 3])], 1)


def _combine(partials: list[tuple[int, Tensor]], degree: Tensor, num_nodes: int, empty: Tensor,
             avg_deg_log: Tensor) -> Tensor:
    """PNA's aggregation (:func:`._aggr.pna_aggregate`'s ``[N, 8M]`` layout) from per-block
    partial moments, each ``(first node, [rows, 4, M])`` over consecutive nodes."""
    moments = torch.cat([p for _, p in partials]) if partials else empty
    index = torch.cat([torch.arange(start, start + p.shape[0], device=degree.device) for start, p in partials]) \
        if partials else degree.new_zeros(0)
    zeros = moments.new_zeros(num_nodes, moments.shape[2])
    expanded = index.unsqueeze(1).expand(-1, moments.shape[2])
    return pna_from_moments(zeros.index_add(0, index, moments[:, 0]), zeros.index_add(0, index, moments[:, 1]),
                            zeros.scatter_reduce(0, expanded, moments[:, 2], "amin", include_self=False),
                            zeros.scatter_reduce(0, expanded, moments[:, 3], "amax", include_self=False),
                            degree, avg_deg_log)


def _chunks(total: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(total)`` (one, even if empty)."""
    return [slice(start, min(start + size, total)) for start in range(0, total, size)] or [slice(0, 0)]


def _pair_sum(table: Tensor, pairs: Tensor) -> Tensor:
    """``table[pairs[:, 0]] + table[pairs[:, 1]]``.

    Without autograd this is one fused gather-and-add (``embedding_bag``), with no
    ``[M, H]`` temporaries; its backward on CPU is slower than ``index_select``'s, so
    meta-training takes the plain path.

    Shapes:
        table: ``[R, H]``; pairs: ``[M, 2]`` -> ``[M, H]``.
    """
    if torch.is_grad_enabled() and table.requires_grad:
        return table.index_select(0, pairs[:, 0]) + table.index_select(0, pairs[:, 1])
    return F.embedding_bag(pairs, table, mode="sum")


def encode_edges(encoder: nn.Sequential, feats: Tensor, graph: NeuralGraph, out: Tensor | None = None) -> Tensor:
    """A two-layer edge encoder (:func:`~.base.mlp`, as wide as its output) on every edge's
    kernel features; ``out``: without autograd, an ``[E, D]`` table to write them into."""
    # the first layer reads only the occupied kernel positions of each edge
    first, act, last = encoder
    if out is None or torch.is_grad_enabled():
        return last(act(graph.edge_linear(feats, first.weight, first.bias)))
    # the hidden layer is as wide as the output: both live in ``out``, a chunk at a time
    hidden = graph.edge_linear(feats, first.weight, first.bias, out=out)
    for start in range(0, hidden.shape[0], graph.chunk_elements):
        rows = hidden[start: start + graph.chunk_elements]
        rows.copy_(last(act(rows)))
    return out


class GraphEncoder(nn.Module):
    """Embeds node features (attached elements + roles) and edge features (kernels)."""

    def __init__(self, node_in: int, edge_in: int, hidden: int, edge_hidden: int | None = None) -> None:
        super().__init__()
        self.node = mlp(node_in, hidden, hidden, 2)
        self.edge = mlp(edge_in, edge_hidden or hidden, edge_hidden or hidden, 2)

    def forward(self, feats: Tensor, graph: NeuralGraph, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``out``: without autograd, an ``[E, D]`` table to write the edge embeddings into."""
        roles = graph.node_roles.to(feats.dtype)
        nodes = self.node(torch.cat([graph.node_features(feats), roles], dim=1))
        return nodes, encode_edges(self.edge, feats, graph, out)


def positive_width(config: dict, key: str) -> None:
    """Check an optional width option: ``None`` or a positive integer."""
    value = config[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"Invalid {key}: {value!r} (a positive integer or None is required)")


def readout_buffer(feats: Tensor, graph: NeuralGraph, width: int) -> Tensor | None:
    """Without autograd, the ``[E + N + 1, width]`` readout table that the edge embeddings
    live in from the encoder on (every layer overwrites them), so that a step holds one
    ``E x D`` table, not three; ``None`` under autograd."""
    if torch.is_grad_enabled() or graph.num_edges == 0:
        return None
    return feats.new_empty(graph.num_edges + graph.num_nodes + 1, width)


def edge_table_embedding(rule: UpdateRule, feats: Tensor, graph: NeuralGraph) -> Tensor:
    """The readout table of a rule made of ``encoder`` (a :class:`GraphEncoder`), ``layers``
    (each ``(nodes, edges, graph, in_place=True) -> (nodes, edges)``), an optional
    ``node_readout`` and a ``head``: ``pna`` and ``rt``."""
    table = readout_buffer(feats, graph, rule.head.embed_dim)
    nodes, edges = rule.encoder(feats, graph, out=None if table is None else table[: graph.num_edges])
    for layer in rule.layers:
        nodes, edges = layer(nodes, edges, graph, in_place=True)  # the old edges are not read again
    if rule.node_readout is not None:
        nodes = rule.node_readout(nodes)
    return graph.readout_table(edges, nodes, table)


class PNARule(UpdateRule):
    name = "pna"
    pipeline_backward = True
    reads_features_by_rows = True
    owns_embedding = True
    defaults = {
        "hidden": 64,
        "layers": 8,
        "head_hidden": 64,
        "head_layers": 2,
        "max_kernel_size": 5,
        "role_dim": 8,
        "reference_degree": 40,
        "update_scale": 0.01,
        # widths of edge embeddings and of messages (None: ``hidden``, the paper's): a lean
        # rule keeps them small, since per-edge work is what grows with the model
        "edge_hidden": None,
        "message_hidden": None,
    }

    def __init__(self, **config) -> None:
        super().__init__(**config)
        for key in ("edge_hidden", "message_hidden"):
            positive_width(self.config, key)
        hidden, edge = self.config["hidden"], self.config["edge_hidden"] or self.config["hidden"]
        self.encoder = GraphEncoder(self.node_input_size, self.edge_input_size, hidden, edge)
        self.layers = nn.ModuleList(
            PNALayer(hidden, self.config["reference_degree"], edge, self.config["message_hidden"])
            for _ in range(self.config["layers"])
        )
        # elements read edge rows and node rows of one table: nodes are brought to the edge width
        self.node_readout = nn.Linear(hidden, edge) if edge != hidden else None
        self.head = Head(edge, self.config["head_hidden"], self.config["head_layers"])

    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        return edge_table_embedding(self, feats, graph), None
