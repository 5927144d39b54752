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
from .pna import PNALayer, block_chunks, encode_edges, positive_width, readout_buffer


class PNALSTMRule(UpdateRule):
    name = "pna_lstm"
    reads_features_by_rows = True
    owns_embedding = True
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
        # widths of edge embeddings and of messages (None: ``hidden``), as in ``pna``
        "edge_hidden": None,
        "message_hidden": None,
    }

    def __init__(self, **config) -> None:
        super().__init__(**config)
        for key in ("edge_hidden", "message_hidden"):
            positive_width(self.config, key)
        hidden, edge = self.config["hidden"], self.config["edge_hidden"] or self.config["hidden"]
        self.node_encoder = mlp(self.node_input_size + hidden, hidden, hidden, 2)
        self.edge_encoder = mlp(self.edge_input_size, edge, edge, 2)
        self.layers = nn.ModuleList(
            PNALayer(hidden, self.config["reference_degree"], edge, self.config["message_hidden"])
            for _ in range(self.config["layers"])
        )
        self.cell = nn.LSTMCell(hidden, hidden)
        self.edge_source = nn.Linear(hidden, edge, bias=False)
        self.edge_target = nn.Linear(hidden, edge, bias=False)
        # elements read edge rows and node rows of one table: nodes are brought to the edge width
        self.node_readout = nn.Linear(hidden, edge) if edge != hidden else None
        self.head = Head(edge, self.config["head_hidden"], self.config["head_layers"])

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
        # without autograd the edges live in the readout table from the start (see ``pna``)
        table = readout_buffer(feats, graph, self.head.embed_dim)
        edges = encode_edges(self.edge_encoder, feats, graph, None if table is None else table[: graph.num_edges])
        for layer in self.layers:
            nodes, edges = layer(nodes, edges, graph, in_place=True)  # the old edges are not read again
        h, c = self.cell(nodes, (h, c))
        from_source, from_target = self.edge_source(h), self.edge_target(h)
        if table is None:
            src, dst = graph.edge_index[:, : graph.num_edges]
            edges = edges + from_source.index_select(0, src) + from_target.index_select(0, dst)
        else:  # in place, a chunk of target rows at a time
            for _, targets, sources, block in block_chunks(graph, edges, graph.chunk_elements):
                block += from_source[sources] + from_target[targets].unsqueeze(1)
        readout = h if self.node_readout is None else self.node_readout(h)
        return graph.readout_table(edges, readout, table), {"h": h, "c": c}
