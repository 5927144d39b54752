"""``rt``: the relational transformer over neural graphs ("NG-T", Kofinas et al. 2024).

Diao & Loynd 2023, "Relational attention": attention from each node over its graph
neighbours, with queries, keys and values conditioned on the connecting edge, followed by
a node feed-forward block and an edge update:

    q_ij = W_q v_i + U_q e_ij,  k_ij = W_k v_j + U_k e_ij,  u_ij = W_v v_j + U_v e_ij
    v_i <- LN(v_i + W_o sum_j softmax_j(q_ij . k_ij / sqrt(d)) u_ij);  v_i <- LN(v_i + FFN(v_i))
    e_ij <- LN(e_ij + phi_e([v_i, e_ij, v_j]))
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from ..graph import NeuralGraph
from .base import Head, RuleState, UpdateRule, mlp
from .pna import BlockPartials, GraphEncoder, block_chunks, edge_table_embedding, positive_width


class RelationalAttention(MessagePassing):
    """Multi-head edge-conditioned attention over incoming edges, plus an edge update.

    Nodes are ``hidden`` wide, edges ``edge_hidden`` (``hidden`` by default, the paper's):
    the edge width sets what the layer costs per weight connection.

    Shapes:
        x: ``[N, H]``; edge_attr: ``[E, D]`` (shared by an edge and its reverse);
        graph: the :class:`NeuralGraph` (or its ``edge_index``, ``[2, 2E]``) -> (``[N, H]``, ``[E, D]``).
    """

    #: edges per chunk on a graph of dense layer blocks
    block_chunk_size: ClassVar[int] = 65536

    def __init__(self, hidden: int, heads: int, edge_hidden: int | None = None) -> None:
        super().__init__(aggr="sum", node_dim=0)
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        edge = edge_hidden or hidden
        self.heads, self.head_dim = heads, hidden // heads
        self.node_qkv = nn.Linear(hidden, 3 * hidden)
        self.edge_qkv = nn.Linear(edge, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)
        self.ffn = mlp(hidden, 2 * hidden, hidden, 2)
        self.edge_source = nn.Linear(hidden, edge)
        self.edge_self = nn.Linear(edge, edge, bias=False)
        self.edge_target = nn.Linear(hidden, edge, bias=False)
        self.edge_out = nn.Linear(edge, edge)
        self.norm1, self.norm2, self.edge_norm = nn.LayerNorm(hidden), nn.LayerNorm(hidden), nn.LayerNorm(edge)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, edge_attr: Tensor, graph: NeuralGraph | Tensor, *,
                in_place: bool = False) -> tuple[Tensor, Tensor]:
        """``in_place``: without autograd, the new edge embeddings may overwrite ``edge_attr``."""
        # under autograd (meta-training) the per-edge ops, whose backward is the faster; in an
        # optimizer step the layer blocks, whose chunks hold no per-edge table of the whole graph
        if isinstance(graph, NeuralGraph) and graph.node_blocks and not torch.is_grad_enabled():
            return self._forward_blocks(x, edge_attr, graph, in_place)
        return self._forward_edges(x, edge_attr, graph if isinstance(graph, Tensor) else graph.edge_index)

    def _forward_edges(self, x: Tensor, edge_attr: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        num_nodes, num_edges = x.shape[0], edge_attr.shape[0]
        q_n, k_n, v_n = self.node_qkv(x).chunk(3, dim=1)
        q_e, k_e, v_e = self.edge_qkv(edge_attr).repeat(2, 1).chunk(3, dim=1)
        shape = (-1, self.heads, self.head_dim)
        q = (q_n.index_select(0, dst) + q_e).view(shape)
        k = (k_n.index_select(0, src) + k_e).view(shape)
        logits = (q * k).sum(-1) / math.sqrt(self.head_dim)  # [2E, heads]
        alpha = softmax(logits, dst, num_nodes=num_nodes)
        values = (v_n.index_select(0, src) + v_e).view(shape) * alpha.unsqueeze(-1)
        attended = self.propagate(edge_index, values=values.flatten(1), size=(num_nodes, num_nodes))
        x = self._node_update(x, attended)
        fsrc, fdst = src[:num_edges], dst[:num_edges]
        update = (self.edge_source(x).index_select(0, fsrc) + self.edge_self(edge_attr)
                  + self.edge_target(x).index_select(0, fdst))
        return x, self.edge_norm(edge_attr + self.edge_out(self.act(update)))

    def _forward_blocks(self, x: Tensor, edge_attr: Tensor, graph: NeuralGraph,
                        in_place: bool) -> tuple[Tensor, Tensor]:
        """The layer on a graph of dense layer blocks, a chunk of target rows at a time, without
        autograd: each chunk's attention is reduced to a partial softmax per node (its maximum
        logit, the sum of exponentials and the weighted sum of values, as in flash attention),
        and the partials are merged; no per-edge table but the edges' own is ever held."""
        q_n, k_n, v_n = self.node_qkv(x).chunk(3, dim=1)
        partials = BlockPartials(_merged)
        for _, targets, sources, block in block_chunks(graph, edge_attr, self.block_chunk_size):
            q_e, k_e, v_e = self.edge_qkv(block).chunk(3, dim=-1)  # [chunk targets, sources, H]
            # each target attends over its sources; each source, over its targets (the reverse edges)
            partials.to_targets(targets, self._attend(q_n[targets].unsqueeze(1) + q_e, k_n[sources] + k_e,
                                                      v_n[sources] + v_e, dim=1))
            partials.to_sources(sources, self._attend(q_n[sources] + q_e, k_n[targets].unsqueeze(1) + k_e,
                                                      v_n[targets].unsqueeze(1) + v_e, dim=0))
        x = self._node_update(x, _combine(partials.done(), x.shape[0], self.heads, self.head_dim, x))
        edge_source, edge_target = self.edge_source(x), self.edge_target(x)
        table = edge_attr if in_place else edge_attr.new_empty(edge_attr.shape)
        for rows, targets, sources, block in block_chunks(graph, edge_attr, self.block_chunk_size):
            update = edge_source[sources] + edge_target[targets].unsqueeze(1) + F.linear(block, self.edge_self.weight)
            table[rows] = self.edge_norm(block + self.edge_out(self.act(update))).flatten(0, 1)
        return x, table

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """The partial softmax over ``dim`` of ``[a, b, H]`` queries, keys and values (broadcast):
        per row and head the maximum logit, ``sum exp(logit - max)`` and the weighted values."""
        q, k, v = torch.broadcast_tensors(q, k, v)
        split = (*q.shape[:2], self.heads, self.head_dim)
        logits = (q * k).view(split).sum(-1) / math.sqrt(self.head_dim)  # [a, b, heads]
        top = logits.amax(dim, keepdim=True)
        weights = (logits - top).exp_()
        return top.squeeze(dim), weights.sum(dim), (weights.unsqueeze(-1) * v.view(split)).sum(dim)

    def _node_update(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.norm1(x + self.out(attended))
        return self.norm2(x + self.ffn(x))

    def message(self, values: Tensor) -> Tensor:
        return values


def _merged(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Two partial softmaxes (:meth:`RelationalAttention._attend`) over disjoint sets of the
    same nodes' neighbours, joined."""
    top = torch.maximum(a[0], b[0])
    fa, fb = (a[0] - top).exp(), (b[0] - top).exp()
    return top, a[1] * fa + b[1] * fb, a[2] * fa.unsqueeze(-1) + b[2] * fb.unsqueeze(-1)


def _combine(partials: list[tuple[int, tuple[Tensor, Tensor, Tensor]]], num_nodes: int, heads: int,
             head_dim: int, like: Tensor) -> Tensor:
    """The attended values ``[N, H]`` from partial softmaxes over consecutive nodes, each
    ``(first node, partial)``; a node with no neighbours gets zeros."""
    if not partials:
        return like.new_zeros(num_nodes, heads * head_dim)
    index = torch.cat([torch.arange(start, start + p[0].shape[0], device=like.device) for start, p in partials])
    top, total, values = (torch.cat(parts) for parts in zip(*(p for _, p in partials)))
    node_top = like.new_zeros(num_nodes, heads).scatter_reduce(0, index.unsqueeze(1).expand_as(top), top, "amax",
                                                               include_self=False)
    factor = (top - node_top[index]).exp()
    total = like.new_zeros(num_nodes, heads).index_add(0, index, total * factor)
    values = like.new_zeros(num_nodes, heads, head_dim).index_add(0, index, values * factor.unsqueeze(-1))
    return (values / total.clamp_min(1e-30).unsqueeze(-1)).flatten(1)


class RTRule(UpdateRule):
    name = "rt"
    reads_features_by_rows = True
    owns_embedding = True
    defaults = {
        "hidden": 32,
        "layers": 2,
        "heads": 4,
        "head_hidden": 64,
        "head_layers": 2,
        "max_kernel_size": 5,
        "role_dim": 8,
        "update_scale": 0.01,
        # the width of edge embeddings (None: ``hidden``, the paper's): what a step costs per
        # weight connection
        "edge_hidden": None,
    }

    def __init__(self, **config) -> None:
        super().__init__(**config)
        positive_width(self.config, "edge_hidden")
        hidden, edge = self.config["hidden"], self.config["edge_hidden"] or self.config["hidden"]
        self.encoder = GraphEncoder(self.node_input_size, self.edge_input_size, hidden, edge)
        self.layers = nn.ModuleList(
            RelationalAttention(hidden, self.config["heads"], edge) for _ in range(self.config["layers"])
        )
        # elements read edge rows and node rows of one table: nodes are brought to the edge width
        self.node_readout = nn.Linear(hidden, edge) if edge != hidden else None
        self.head = Head(edge, self.config["head_hidden"], self.config["head_layers"])

    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        # each element reads out its own edge/node: no token is prepended, so no index shift
        # (a flaw of the reference implementation)
        return edge_table_embedding(self, feats, graph), None
