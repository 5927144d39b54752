"""Distillation: collected pairs are the optimizer's real inputs, and the student learns the teacher."""
from __future__ import annotations

import json

import pytest
import torch

from gnnopt.rules import create, load_rule
from gnnopt.training import distill


def test_collect_then_train_brings_the_student_to_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = create("pna", hidden=8, layers=1, head_hidden=8, graph_every=3)
    with torch.no_grad():  # a teacher whose updates depend on the features, not only on its bias
        teacher.head.net[-1].weight.mul_(10.0)
    teacher.save_pretrained(tmp_path / "teacher")
    data = tmp_path / "data"
    distill.main(["collect", "--teacher", str(tmp_path / "teacher"), "--tasks", "fmnist17-d1", "--steps", "12",
                  "--trajectories", "3", "--windows", "2", "--embedded", "--out", str(data)])
    blob = torch.load(data / "fmnist17-d1-s1.pt")
    assert blob["graph_every"] == 3 and len(blob["pairs"]) == 2
    windows = [pair["step"] // 3 for pair in blob["pairs"]]
    assert windows == sorted(set(windows))  # one pair per sampled window, in order
    for pair in blob["pairs"]:
        assert pair["anchor"].shape == pair["later"].shape == (7, 650)  # theta, grad, 5 momenta
        # the anchor is the window's graph step: the later inputs are the same ones only there
        assert torch.equal(pair["anchor"], pair["later"]) == (pair["step"] % 3 == 0)
    assert not list(data.glob("*.partial"))

    out = tmp_path / "student"
    distill.main(["train", "--teacher", str(tmp_path / "teacher"), "--data", str(data), "--rule", "pna",
                  "--rule-config", json.dumps({"hidden": 8, "layers": 1, "edge_hidden": 4, "head_hidden": 8}),
                  "--steps", "60", "--eval-every", "20", "--lr", "3e-3", "--out", str(out)])
    rows = [json.loads(line) for line in (out / "distill.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40, 60]
    assert rows[-1]["held_out"] < rows[0]["held_out"]  # held-out trajectory (seed 3)
    student = load_rule(out / "best")
    # the student takes the teacher's update form, so it is used the same way
    assert student.config["graph_every"] == 3 and student.config["edge_hidden"] == 4
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["distillation"]["held_out_error"] == min(r["held_out"] for r in rows)


def test_a_stateful_student_learns_over_runs_of_consecutive_windows(tmp_path):
    """pna_lstm carries its state from one graph step to the next: its data come in runs of
    consecutive windows, and without them training says what to collect."""
    torch.manual_seed(0)
    teacher = create("pna", hidden=8, layers=1, head_hidden=8, graph_every=2)
    teacher.save_pretrained(tmp_path / "teacher")
    common = ["--teacher", str(tmp_path / "teacher"), "--tasks", "fmnist17-d1", "--steps", "24", "--trajectories", "3",
              "--embedded"]
    distill.main(["collect", *common, "--windows", "10", "--segments", "2", "--out", str(tmp_path / "runs")])
    distill.main(["collect", *common, "--windows", "4", "--out", str(tmp_path / "single")])
    windows = [pair["window"] for pair in torch.load(tmp_path / "runs" / "fmnist17-d1-s1.pt")["pairs"]]
    assert len(windows) == 10 and windows[0] % 5 == 0 and windows[5] % 5 == 0
    assert windows[:5] == list(range(windows[0], windows[0] + 5))  # two runs of five consecutive windows
    assert windows[5:] == list(range(windows[5], windows[5] + 5))
    student = ["train", "--teacher", str(tmp_path / "teacher"), "--rule", "pna_lstm", "--rule-config",
               json.dumps({"hidden": 8, "layers": 1, "edge_hidden": 4, "message_hidden": 4, "head_hidden": 8}),
               "--steps", "30", "--eval-every", "10", "--lr", "3e-3"]
    with pytest.raises(ValueError, match="--segments"):
        distill.main([*student, "--data", str(tmp_path / "single"), "--out", str(tmp_path / "no")])
    out = tmp_path / "student"
    distill.main([*student, "--data", str(tmp_path / "runs"), "--out", str(out)])
    rows = [json.loads(line) for line in (out / "distill.jsonl").read_text().splitlines()]
    assert rows[-1]["held_out"] < rows[0]["held_out"]
    assert load_rule(out / "best").stateful
