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
    for name in list_pretrained():  # bundled checkpoints travel inside the wheel
        assert (path.parent / "pretrained" / name / "model.safetensors").is_file()


def test_every_registered_rule_builds_an_optimizer():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert list_rules() == ["ff", "lstm", "pna", "pna_lstm", "rt"]
    for name in list_rules():
        opt = GNNOptimizer(model.named_parameters(), create(name))
        assert opt.graph.num_nodes == 4 + 8 + 2
