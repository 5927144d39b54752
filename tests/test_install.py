"""The installed package (CI installs with `pip install .`, not editable)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch import nn

import gnnopt
from gnnopt import GNNOptimizer, list_pretrained
from gnnopt.rules import create, list_rules


@pytest.mark.skipif(not os.environ.get("GNNOPT_TEST_INSTALLED"), reason="only under CI's `pip install .`")
def test_tests_run_against_the_installed_wheel():
    path = Path(gnnopt.__file__).resolve()
    assert "site-packages" in path.parts, f"gnnopt imported from {path}, not the installed package"
    assert (path.parent / "_data" / "fmnist_subset.safetensors.gz").is_file()
    in_repo = sorted(d.name for d in (Path(__file__).parent.parent / "pretrained").iterdir()
                     if (d / "model.safetensors").is_file())
    assert in_repo and set(in_repo) <= set(list_pretrained())  # every bundled checkpoint is in the wheel
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    for name in in_repo:  # the card's plot travels with it
        if (Path(__file__).parent.parent / "pretrained" / name / "summary.png").is_file():
            assert (path.parent / "pretrained" / name / "summary.png").is_file()
    for name in list_pretrained():
        assert (path.parent / "pretrained" / name / "model.safetensors").is_file()
        GNNOptimizer.from_pretrained(name, model.named_parameters())  # offline: no Hub involved


def test_every_registered_rule_builds_an_optimizer():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert list_rules() == ["ff", "lstm", "pna", "pna_lstm", "rt"]
    for name in list_rules():
        rule = create(name)
        opt = GNNOptimizer(model.named_parameters(), rule)
        # rules that read no graph get only the layout
        assert opt.graph.num_nodes == (4 + 8 + 2 if rule.reads_graph else 0)
        assert opt.graph.num_elements == sum(p.numel() for p in model.parameters())
