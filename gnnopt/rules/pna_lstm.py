"""``pna_lstm``: a recurrent neural-graph GNN whose node states persist across steps.

The follow-up study to Kofinas et al. 2024 proposed a recurrent GNN optimizer; its
reference code re-zeroed the recurrent state inside every call, so it was never
recurrent. Here the state is real: each step, the PNA layers (see :mod:`.pna`) read the
current features together with the previous step's node state, an LSTM cell per node
updates ``(h, c)``, and edges read out through the new node states. ``(h, c)`` is
returned to the caller, which keeps it in optimizer state (and in ``state_dict``).

    v^0 = enc([x_i, h_i^{t-1}]),  v^L, e^L = PNA^L(v^0, e^0)
    h^t, c^t = LSTMCell(v^L, (h^{t-1}, c^{t-1}))
    e_ij^out = e_ij^L + A h_i^t + B h_j^t
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graph import NeuralGraph
from .base import Head, RuleState, UpdateRule, mlp
from .pna import PNALayer


class PNALSTMRule(UpdateRule):
    name = "pna_lstm"
    reads_features_by_rows = True
    stateful = True
    defaults = {
        "hidden": 64,
        "layers": 4,
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
        self.node_encoder = mlp(self.node_input_size + hidden, hidden, hidden, 2)
        self.edge_encoder = mlp(self.edge_input_size, hidden, hidden, 2)
        self.layers = nn.ModuleList(
            PNALayer(hidden, self.config["reference_degree"]) for _ in range(self.config["layers"])
        )
        self.cell = nn.LSTMCell(hidden, hidden)
        self.edge_source = nn.Linear(hidden, hidden, bias=False)
        self.edge_target = nn.Linear(hidden, hidden, bias=False)
        self.head = Head(hidden, self.config["head_hidden"], self.config["head_layers"])

    def init_state(self, graph: NeuralGraph, device: torch.device) -> RuleState:
        zeros = torch.zeros(graph.num_nodes, self.config["hidden"], device=device)
        return {"h": zeros, "c": zeros.clone()}

    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        if state is None:
            state = self.init_state(graph, feats.device)
        h, c = state["h"].to(feats.dtype), state["c"].to(feats.dtype)
        if h.shape[0] != graph.num_nodes:
            raise ValueError(f"recurrent state has {h.shape[0]} nodes, the graph {graph.num_nodes}")
        roles = graph.node_roles.to(feats.dtype)
        nodes = self.node_encoder(torch.cat([graph.node_features(feats), roles, h], dim=1))
        first = self.edge_encoder[0]  # reads only the occupied kernel positions of each edge
        edges = self.edge_encoder[1:](graph.edge_linear(feats, first.weight, first.bias))
        for layer in self.layers:
            nodes, edges = layer(nodes, edges, graph, in_place=True)  # the old edges are not read again
        h, c = self.cell(nodes, (h, c))
        src, dst = graph.edge_index[:, : graph.num_edges]
        edges = edges + self.edge_source(h).index_select(0, src) + self.edge_target(h).index_select(0, dst)
        return graph.readout_table(edges, h), {"h": h, "c": c}
