"""GNNOptimizer on your own models: a residual CNN with BatchNorm and a small Transformer.

Shows which parameters the neural graph covers (``opt.graph``): convolutions and linear
layers that chain become nodes and edges, BatchNorm/LayerNorm scales and shifts join their
layer's nodes, and everything else (embeddings, attention projections, a learned position
table) is still optimized, by the rule's per-element head alone, after one warning that
names it (``strict=True`` raises instead). The graph is inferred from the order and shapes
of the parameters, so the residual CNN reads as a plain chain: the skip is no edge.

    python examples/any_model.py                              # a bundled rule if any, else an untrained PNA
    python examples/any_model.py --rule runs/pna/best --steps 300

The data are toy problems generated here (bright-quadrant images, "does token 1 occur"
sequences): they show the mechanics, not how well a rule optimizes.
"""
from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from gnnopt import GNNOptimizer, list_pretrained
from gnnopt.rules import load_rule
from gnnopt.rules import create


class ResidualCNN(nn.Module):
    """stem conv + BatchNorm, one residual block of two conv + BatchNorm, pooled linear head."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        h = F.relu(h + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))))
        return self.head(h.mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings, one post-norm encoder block, mean-pooled head."""

    def __init__(self, vocab: int = 16, dim: int = 32, heads: int = 4, length: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(length, dim))
        self.attn, self.norm1 = nn.MultiheadAttention(dim, heads, batch_first=True), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos
        h = self.norm1(h + self.attn(h, h, h, need_weights=False)[0])
        h = self.norm2(h + self.ff(h))
        return self.head(h.mean(dim=1))


def quadrant_images(n: int, gen: torch.Generator):
    """Noise images whose label is the brightest quadrant."""
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randn(n, 3, 16, 16, generator=gen)
    for label, (r, c) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        x[y == label, :, r:r + 8, c:c + 8] += 1.0
    return x, y


def token_sequences(n: int, gen: torch.Generator, vocab: int = 16, length: int = 12):
    """Random tokens from 2..vocab-1; label 1 (half the time) when a token 1 is planted."""
    x = torch.randint(2, vocab, (n, length), generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    x[y == 1, torch.randint(0, length, (int(y.sum()),), generator=gen)] = 1
    return x, y


def describe(opt: GNNOptimizer, model: nn.Module) -> None:
    graph, sizes = opt.graph, dict((n, p.numel()) for n, p in model.named_parameters())
    left = sum(sizes[n] for n in graph.fallback)
    print(f"  neural graph: {graph.num_nodes} nodes, {graph.num_edges} edges (x2 with reverse edges); "
          f"covers {graph.num_elements - left:,} of {graph.num_elements:,} parameter elements")
    print(f"  head only (fallback): {', '.join(graph.fallback) or 'none'}")


def train(name: str, model: nn.Module, batches, rule, steps: int) -> None:
    print(f"\n{name} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = GNNOptimizer(model, rule)  # a module: its layer types tell layers from norms from the rest
    for w in caught:
        print(f"  {w.category.__name__}: {w.message}")
    describe(opt, model)
    losses = []
    for step in range(steps):
        x, y = batches()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    k = max(1, min(10, steps // 2))
    print(f"  train loss: first {k} steps {sum(losses[:k]) / k:.3f}, last {k} steps {sum(losses[-k:]) / k:.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", default=None, help="bundled name, checkpoint directory or Hub repo id")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"Invalid --steps: {args.steps} (need a positive int)")
    torch.manual_seed(args.seed)
    bundled = list_pretrained()
    name = args.rule or ("pna-fmnist17" if "pna-fmnist17" in bundled else next(iter(bundled), None))
    if name is None:
        rule = create("pna")
        print("note: no pretrained rule is bundled and no --rule given: using an UNTRAINED pna rule "
              "(random weights), so the losses below show the mechanics only")
    else:
        rule = load_rule(name)
        print(f"rule: {name}")
    gen = torch.Generator().manual_seed(args.seed)
    print("data: toy problems generated by this script (not a benchmark)")
    train("residual CNN with BatchNorm", ResidualCNN(), lambda: quadrant_images(64, gen), rule, args.steps)
    train("Transformer (Embedding + MultiheadAttention + LayerNorm)", TinyTransformer(),
          lambda: token_sequences(64, gen), rule, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
