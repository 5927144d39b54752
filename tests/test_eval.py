"""The evaluation protocol and `python -m gnnopt.eval`."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from gnnopt.data import Dataset, load_dataset
from gnnopt.eval import main as eval_main
from gnnopt.eval import train_optimizee, tune_lr
from gnnopt.baselines import make_baseline
from gnnopt.rules import create
from gnnopt.tasks import get_task


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset("fmnist", embedded=True)


def test_train_optimizee_records_a_curve(data):
    result = train_optimizee(get_task("fmnist17"), data, lambda m: make_baseline("adam", m, 1e-2), steps=30,
                             seed=101, record_every=10)
    assert [c["step"] for c in result["curve"]] == [10, 20, 30]
    assert result["curve"][-1]["train_loss"] < result["curve"][0]["train_loss"]
    again = train_optimizee(get_task("fmnist17"), data, lambda m: make_baseline("adam", m, 1e-2), steps=30,
                            seed=101, record_every=10)
    assert again["curve"] == result["curve"]  # seeded: reproducible


def test_lr_tuning_reads_only_the_validation_split(data):
    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError("tuning read the test set")

    guarded = Dataset(data.train, data.val, Forbidden(), data.name, data.source)
    lr, scores = tune_lr("adam", get_task("fmnist17"), guarded, steps=5, seeds=[101], grid=[1e-3, 1e-2])
    assert lr in (1e-3, 1e-2) and set(scores) == {1e-3, 1e-2}


def test_cli_evaluates_a_checkpoint_and_tuned_adam_in_one_command(tmp_path):
    torch.manual_seed(0)
    create("ff").save_pretrained(tmp_path / "run" / "best")
    out = tmp_path / "eval"
    code = eval_main(["--task", "fmnist17", "--rule", str(tmp_path / "run" / "best"), "--baseline", "adam",
                      "--steps", "20", "--seeds", "101-102", "--tune-seeds", "1", "--record-every", "10",
                      "--embedded", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"].split(" ")[0] for r in rows] == ["run/best", "adam"]
    assert rows[1]["lr"] in [1e-3, 3e-3, 6e-3, 1e-2, 2e-2, 3e-2] and "tuning_val_acc" in rows[1]
    assert all(len(r["test_acc"]) == 2 for r in rows)
    assert "± " in (out / "results.md").read_text() and "embedded" in (out / "results.md").read_text()
    with open(out / "curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * 2  # methods x seeds x records
    assert (out / "curves.png").stat().st_size > 10_000


def test_cli_needs_a_method(capsys):
    assert eval_main(["--task", "fmnist17"]) == 2
    assert "--rule or --baseline" in capsys.readouterr().err


def test_cli_reports_accuracy_at_intermediate_steps(tmp_path):
    """``--report-steps``: a long run also tabulates the accuracy it had at an earlier step,
    the same as a run of that length (runs are seeded, recording does not change them)."""
    torch.manual_seed(0)
    create("ff").save_pretrained(tmp_path / "rule")
    common = ["--task", "fmnist17", "--rule", str(tmp_path / "rule"), "--seeds", "101-102", "--record-every", "10",
              "--embedded"]
    assert eval_main([*common, "--steps", "30", "--report-steps", "10,20", "--out", str(tmp_path / "long")]) == 0
    assert eval_main([*common, "--steps", "10", "--out", str(tmp_path / "short")]) == 0
    long = json.loads((tmp_path / "long" / "results.json").read_text())["rows"][0]
    short = json.loads((tmp_path / "short" / "results.json").read_text())["rows"][0]
    assert long["at"]["10"]["test_acc"] == short["test_acc"]
    table = (tmp_path / "long" / "results.md").read_text()
    assert "after 10 steps (%)" in table and "after 20 steps (%)" in table
    assert eval_main([*common, "--steps", "30", "--report-steps", "15", "--out", str(tmp_path / "bad")]) == 2
