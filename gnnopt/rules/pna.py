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

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import DegreeScalerAggregation

from ..graph import NeuralGraph, message_pairs
from ._aggr import pna_aggregate
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

    Shapes:
        x: ``[N, H]``; edge_attr: ``[E, H]``; graph: the :class:`NeuralGraph` (or its
        ``edge_index``, ``[2, 2E]``) -> (``[N, H]``, ``[E, H]``).
    """

    #: edges per chunk of the per-edge computations (a ``[chunk, 64]`` float32 is 2 MiB)
    chunk_size: ClassVar[int] = 8192

    def __init__(self, hidden: int, reference_degree: int) -> None:
        # The degree normaliser is a buffer (saved in the checkpoint), not a function of
        # the layout the rule runs on, so a rule transfers across widths unchanged.
        deg = torch.zeros(reference_degree + 1, dtype=torch.long)
        deg[reference_degree] = 1
        # torch_geometric's module defines the aggregation (and holds the degree buffer);
        # aggregate() computes the same function in fewer ops (._aggr.pna_aggregate)
        super().__init__(aggr=DegreeScalerAggregation(AGGREGATORS, SCALERS, deg=deg), node_dim=0)
        self.msg_target = nn.Linear(hidden, hidden)
        self.msg_source = nn.Linear(hidden, hidden, bias=False)
        self.msg_out = nn.Linear(hidden, hidden)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.node_update = mlp(hidden * (1 + len(AGGREGATORS) * len(SCALERS)), hidden, hidden, 2)
        self.edge_source = nn.Linear(hidden, hidden)
        self.edge_self = nn.Linear(hidden, hidden, bias=False)
        self.edge_target = nn.Linear(hidden, hidden, bias=False)
        self.edge_out = nn.Linear(hidden, hidden)
        self.node_norm = nn.LayerNorm(hidden)
        self.edge_norm = nn.LayerNorm(hidden)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, edge_attr: Tensor, graph: NeuralGraph | Tensor) -> tuple[Tensor, Tensor]:
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
            chunks.append(torch.addcmul(shift, hidden.view(2, *scale.shape), scale))
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


class GraphEncoder(nn.Module):
    """Embeds node features (attached elements + roles) and edge features (kernels)."""

    def __init__(self, node_in: int, edge_in: int, hidden: int) -> None:
        super().__init__()
        self.node = mlp(node_in, hidden, hidden, 2)
        self.edge = mlp(edge_in, hidden, hidden, 2)

    def forward(self, feats: Tensor, graph: NeuralGraph) -> tuple[Tensor, Tensor]:
        roles = graph.node_roles.to(feats.dtype)
        nodes = self.node(torch.cat([graph.node_features(feats), roles], dim=1))
        # the first layer reads only the occupied kernel positions of each edge
        first = self.edge[0]
        return nodes, self.edge[1:](graph.edge_linear(feats, first.weight, first.bias))


class PNARule(UpdateRule):
    name = "pna"
    pipeline_backward = True
    defaults = {
        "hidden": 64,
        "layers": 8,
        "head_hidden": 64,
        "head_layers": 2,
        "max_kernel_size": 5,
        "role_dim": 8,
        "reference_degree": 40,
        "update_scale": 0.01,
    }

    def __init__(self, **config) -> None:
        super().__init__(**config)
        hidden = self.config["hidden"]
        self.encoder = GraphEncoder(self.node_input_size, self.edge_input_size, hidden)
        self.layers = nn.ModuleList(
            PNALayer(hidden, self.config["reference_degree"]) for _ in range(self.config["layers"])
        )
        self.head = Head(hidden, self.config["head_hidden"], self.config["head_layers"])

    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        nodes, edges = self.encoder(feats, graph)
        for layer in self.layers:
            nodes, edges = layer(nodes, edges, graph)
        return graph.readout_table(edges, nodes), None
