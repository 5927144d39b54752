"""Shared fixtures: tiny literal models and a hand-set "sign descent" head for behaviour tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnopt.features import FEATURE_SIZE, RAW_FEATURES
from gnnopt.rules import UpdateRule, list_rules

torch.set_num_threads(min(2, torch.get_num_threads()))

RULES = list_rules()


def task17_cnn(in_channels: int = 1, widths=(16, 32, 32), classes: int = 10) -> nn.Sequential:
    """The task-17 CNN of SPEC section 6, written out literally for graph tests."""
    layers: list[nn.Module] = []
    prev = in_channels
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(prev, w, 3, stride=2 if i == 0 else 1, padding=0 if i == 0 else 1), nn.ReLU()]
        prev = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, classes)]
    return nn.Sequential(*layers)


def small_cnn() -> nn.Sequential:
    return task17_cnn(1, (4, 8), 3)


def small_batch(seed: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 12, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def make_sign_descent(rule: UpdateRule, strength: float = 1.0) -> UpdateRule:
    """Set the rule's head to d = -strength * sign(g), m = 0: signSGD with step 0.01*strength.

    The graph embedding still flows through the head's input (its weights are zeroed), so
    a model trained with this rule exercises the whole pipeline while its loss must fall.
    """
    first, last = rule.head.net[0], rule.head.net[-1]
    sign_g = first.in_features - FEATURE_SIZE + RAW_FEATURES + 1  # sign part of the gradient
    a = 20.0
    with torch.no_grad():
        for layer in rule.head.net:
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        first.weight[0, sign_g] = a
        first.weight[1, sign_g] = -a
        if len(rule.head.net) > 3:  # deeper heads pass the two units through as identities
            for layer in list(rule.head.net)[2:-1]:
                if isinstance(layer, nn.Linear):
                    layer.weight[0, 0] = layer.weight[1, 1] = 1.0
        last.weight[0, 0] = -strength / a
        last.weight[0, 1] = strength / a
    return rule


@pytest.fixture(params=RULES)
def rule_name(request) -> str:
    return request.param
