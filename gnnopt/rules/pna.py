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

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import DegreeScalerAggregation

from ..graph import NeuralGraph
from .base import Head, RuleState, UpdateRule, mlp

AGGREGATORS = ["mean", "min", "max", "std"]
SCALERS = ["identity", "amplification"]


class PNALayer(MessagePassing):
    """One PNA layer with FiLM messages and an edge update.

    Edge embeddings are shared by an edge and its reverse (``edge_attr`` has ``E`` rows
    while ``edge_index`` has ``2E`` columns, forward edges first). The first linear map of
    each MLP on a concatenation is split into per-node projections that are gathered
    afterwards, which is the same function at a fraction of the cost on wide layers.

    Shapes:
        x: ``[N, H]``; edge_attr: ``[E, H]``; edge_index: ``[2, 2E]`` -> (``[N, H]``, ``[E, H]``).
    """

    def __init__(self, hidden: int, reference_degree: int) -> None:
        # The degree normaliser is a buffer (saved in the checkpoint), not a function of
        # the layout the rule runs on, so a rule transfers across widths unchanged.
        deg = torch.zeros(reference_degree + 1, dtype=torch.long)
        deg[reference_degree] = 1
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

    def forward(self, x: Tensor, edge_attr: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        src, dst = edge_index
        num_edges = edge_attr.shape[0]
        # phi_m([v_i, v_j]) with i the target, j the source
        hidden = self.act(self.msg_target(x)[dst] + self.msg_source(x)[src])
        scale, shift = self.film(edge_attr).repeat(2, 1).chunk(2, dim=1)
        messages = scale * self.msg_out(hidden) + shift
        aggregated = self.propagate(edge_index, messages=messages, size=(x.shape[0], x.shape[0]))
        x = self.node_norm(x + self.node_update(torch.cat([x, aggregated], dim=1)))
        fsrc, fdst = src[:num_edges], dst[:num_edges]
        update = self.edge_source(x)[fsrc] + self.edge_self(edge_attr) + self.edge_target(x)[fdst]
        edge_attr = self.edge_norm(edge_attr + self.edge_out(self.act(update)))
        return x, edge_attr

    def message(self, messages: Tensor) -> Tensor:
        return messages


class GraphEncoder(nn.Module):
    """Embeds node features (attached elements + roles) and edge features (kernels)."""

    def __init__(self, node_in: int, edge_in: int, hidden: int) -> None:
        super().__init__()
        self.node = mlp(node_in, hidden, hidden, 2)
        self.edge = mlp(edge_in, hidden, hidden, 2)

    def forward(self, feats: Tensor, graph: NeuralGraph) -> tuple[Tensor, Tensor]:
        roles = graph.node_roles.to(feats.dtype)
        nodes = self.node(torch.cat([graph.node_features(feats), roles], dim=1))
        return nodes, self.edge(graph.edge_features(feats))


class PNARule(UpdateRule):
    name = "pna"
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

    def forward(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        nodes, edges = self.encoder(feats, graph)
        for layer in self.layers:
            nodes, edges = layer(nodes, edges, graph.edge_index)
        return self.head(feats, graph.readout(edges, nodes)), None
