"""``lstm``: a per-tensor LSTM feeding a per-element head.

Each parameter tensor is summarised by the mean of its projected element features; an
LSTM cell reads the tensors in order (input to output), so each tensor's context depends
on the tensors before it; its output is broadcast back to the tensor's elements and
concatenated with their own features for the FF head (the paper's "LSTM" baseline,
Kofinas et al. 2024, sec. 4.3, after Andrychowicz et al. 2016).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..features import FEATURE_SIZE
from ..graph import NeuralGraph
from .base import Head, RuleState, UpdateRule


class LSTMRule(UpdateRule):
    name = "lstm"
    reads_graph = False
    reads_features_by_rows = True
    defaults = {"hidden": 32, "layers": 1, "head_hidden": 32, "head_layers": 2, "update_scale": 0.01}

    def __init__(self, **config) -> None:
        super().__init__(**config)
        hidden = self.config["hidden"]
        self.proj = nn.Linear(FEATURE_SIZE, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=self.config["layers"])
        self.head = Head(hidden, self.config["head_hidden"], self.config["head_layers"])

    def embed(self, feats: Tensor, graph: NeuralGraph, state: RuleState = None) -> tuple[Tensor, RuleState]:
        # the per-tensor sums of the projected features, a chunk of rows at a time: no [P, hidden]
        # table (and, in an optimizer step, no [P, FEATURE_SIZE] one either)
        sums = feats.new_zeros(graph.num_tensors, self.proj.out_features)
        for start in range(0, feats.shape[0], Head.chunk_size):
            rows = slice(start, start + Head.chunk_size)
            sums.index_add_(0, graph.tensor_index[rows], torch.relu(self.proj(feats[rows])))
        counts = torch.tensor([max(1, _numel(s)) for s in graph.shapes], dtype=feats.dtype, device=feats.device)
        summary, _ = self.lstm((sums / counts.unsqueeze(1)).unsqueeze(1))  # [T, 1, H]
        return summary.squeeze(1), state

    def readout_rows(self, graph: NeuralGraph) -> Tensor:
        return graph.tensor_index  # one context row per tensor


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
