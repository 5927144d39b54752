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

from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from ..graph import NeuralGraph
from .base import Head, RuleState, UpdateRule, mlp
from .pna import GraphEncoder


class RelationalAttention(MessagePassing):
    """Multi-head edge-conditioned attention over incoming edges, plus an edge update.

    Shapes:
        x: ``[N, H]``; edge_attr: ``[E, H]`` (shared by an edge and its reverse);
        edge_index: ``[2, 2E]`` -> (``[N, H]``, ``[E, H]``).
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__(aggr="sum", node_dim=0)
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads, self.head_dim = heads, hidden // heads
        self.node_qkv = nn.Linear(hidden, 3 * hidden)
        self.edge_qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)
        self.ffn = mlp(hidden, 2 * hidden, hidden, 2)
        self.edge_source = nn.Linear(hidden, hidden)
        self.edge_self = nn.Linear(hidden, hidden, bias=False)
        self.edge_target = nn.Linear(hidden, hidden, bias=False)
        self.edge_out = nn.Linear(hidden, hidden)
        self.norm1, self.norm2, self.edge_norm = nn.LayerNorm(hidden), nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, edge_attr: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
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
        x = self.norm1(x + self.out(attended))
        x = self.norm2(x + self.ffn(x))
        fsrc, fdst = src[:num_edges], dst[:num_edges]
        update = (self.edge_source(x).index_select(0, fsrc) + self.edge_self(edge_attr)
                  + self.edge_target(x).index_select(0, fdst))
        return x, self.edge_norm(edge_attr + self.edge_out(self.act(update)))

    def message(self, values: Tensor) -> Tensor:
        return values


class RTRule(UpdateRule):
    name = "rt"
    reads_features_by_rows = True
    defaults = {
        "hidden": 32,
        "layers": 2,
        "heads": 4,
        "head_hidden": 64,
        "head_layers": 2,
        "max_kernel_size": 5,
        "role_dim": 8,
        "update_scale": 0.01,
    }

    def __init__(self, **config) -> None:
        super().__init__(**config)
        hidden = self.config["hidden"]
        self.encoder = GraphEncoder(self.node_input_size, self.edge_input_size, hidden)
        self.layers = nn.ModuleList(
            RelationalAttention(hidden, self.config["heads"]) for _ in range(self.config["layers"])
        )
        self.head = Head(hidden, self.config["head_hidden"], self.config["head_layers"])

    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        nodes, edges = self.encoder(feats, graph)
        for layer in self.layers:
            nodes, edges = layer(nodes, edges, graph.edge_index)
        # read out each element from its own edge/node: no token is prepended, so no
        # index shift (a flaw of the reference implementation)
        return graph.readout_table(edges, nodes), None
