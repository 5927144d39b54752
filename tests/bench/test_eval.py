"""The evaluation protocol and `python -m gnnopt.eval`."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from gnnopt.bench.data import Dataset, load_dataset
from gnnopt.eval import main as eval_main
from gnnopt.bench.protocol import train_optimizee, tune_lr
from gnnopt.bench.baselines import make_baseline
from gnnopt.rules import create
from gnnopt.bench.tasks import get_task


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


def test_cli_resume_reuses_finished_runs_and_only_those(tmp_path, monkeypatch):
    """Every run is stored as it ends; ``--resume`` reads finished runs back (identical
    results, no training), trains only what is missing, and never reuses a run of a rule
    whose weights changed."""
    import gnnopt.bench.protocol as ev

    torch.manual_seed(0)
    rule = create("ff")
    rule.save_pretrained(tmp_path / "rule")
    out = tmp_path / "eval"
    args = ["--task", "fmnist17", "--rule", str(tmp_path / "rule"), "--baseline", "adam", "--steps", "10",
            "--tune-seeds", "1", "--record-every", "5", "--embedded", "--out", str(out)]
    assert eval_main([*args, "--seeds", "101"]) == 0
    first = json.loads((out / "results.json").read_text())["rows"]
    stored = sorted((out / "runs").glob("*.json"))
    assert len(stored) == 6 + 2  # Adam's lr grid on one tuning seed, then one test run per method

    calls = []
    real = ev.train_optimizee
    monkeypatch.setattr(ev, "train_optimizee", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k))
    assert eval_main([*args, "--seeds", "101-102", "--resume"]) == 0
    assert sorted(calls) == [102, 102]  # only the new seed, once per method
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["test_acc"][0] for r in rows] == [r["test_acc"][0] for r in first]
    assert [r["lr"] for r in rows] == [r["lr"] for r in first]

    with torch.no_grad():  # a retrained rule under the same name is a different method
        next(rule.parameters()).add_(0.1)
    rule.save_pretrained(tmp_path / "rule")
    calls.clear()
    assert eval_main([*args, "--seeds", "101", "--resume"]) == 0
    assert calls == [101]  # the rule's run again; Adam's runs reused


def test_cli_progress_counts_steps_of_trained_runs_only(tmp_path, capsys):
    """The evaluation's progress bar counts optimizer steps (a long run shows it moving); a run
    read back by ``--resume`` leaves its total, so the rate and time left stay true and the bar
    still ends at its total."""
    torch.manual_seed(0)
    create("ff").save_pretrained(tmp_path / "rule")
    args = ["--task", "fmnist17", "--rule", str(tmp_path / "rule"), "--steps", "10", "--embedded",
            "--out", str(tmp_path / "eval"), "--resume"]
    assert eval_main([*args, "--seeds", "101"]) == 0
    assert "10/10" in capsys.readouterr().err
    assert eval_main([*args, "--seeds", "101-102"]) == 0  # seed 101 reused, 102 trained
    err = capsys.readouterr().err
    assert "10/10" in err and "20/20" not in err  # the bar ends at 10 trained steps of 10


def test_tune_rule_lr_picks_the_multiplier_on_validation(tmp_path, monkeypatch):
    """``--tune-rule-lr`` tunes a rule's update multiplier over the grid on the validation
    split (as Adam's lr is), then trains the test runs with the chosen multiplier."""
    import gnnopt.bench.protocol as ev

    torch.manual_seed(0)
    create("ff").save_pretrained(tmp_path / "rule")
    monkeypatch.setattr(ev, "DEFAULT_RULE_LR_GRID", (1.0, 4.0))
    seen = []
    from gnnopt import optimizer as opt_module  # spy on the class: the protocol builds it per run

    original = opt_module.GNNOptimizer.__init__

    def spy(self, params, rule, lr=1.0, **kwargs):
        seen.append(lr)
        original(self, params, rule, lr=lr, **kwargs)

    monkeypatch.setattr(opt_module.GNNOptimizer, "__init__", spy)
    out = tmp_path / "eval"
    assert eval_main(["--task", "fmnist17", "--rule", str(tmp_path / "rule"), "--tune-rule-lr", "--steps", "5",
                      "--seeds", "101-102", "--tune-seeds", "1", "--record-every", "5", "--embedded",
                      "--out", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert set(row["tuning_val_acc"]) == {"1.0", "4.0"}
    assert row["lr"] == max((1.0, 4.0), key=lambda k: row["tuning_val_acc"][str(k)])
    assert row["method"].endswith(f"(lr ×{row['lr']:g}, tuned)")
    assert seen == [1.0, 4.0, row["lr"], row["lr"]]  # two tuning runs (one seed), then two test seeds


def test_rules_run_with_their_own_graph_every_and_may_be_told_the_length(tmp_path, monkeypatch):
    """A rule runs as its checkpoint says (its ``graph_every``) unless ``--graph-every`` is
    given, and ``--tell-length`` passes the run's length as ``total_steps``."""
    torch.manual_seed(0)
    create("ff", graph_every=3).save_pretrained(tmp_path / "rule")
    seen = []
    from gnnopt import optimizer as opt_module

    original = opt_module.GNNOptimizer.__init__

    def spy(self, params, rule, **kwargs):
        original(self, params, rule, **kwargs)
        seen.append((self.graph_every, self.total_steps))

    monkeypatch.setattr(opt_module.GNNOptimizer, "__init__", spy)
    common = ["--task", "fmnist17", "--rule", str(tmp_path / "rule"), "--steps", "4", "--seeds", "101",
              "--record-every", "4", "--embedded"]
    assert eval_main([*common, "--out", str(tmp_path / "a")]) == 0
    assert eval_main([*common, "--graph-every", "1", "--tell-length", "--out", str(tmp_path / "b")]) == 0
    assert seen == [(3, None), (1, 4)]
    rows = [json.loads((tmp_path / d / "results.json").read_text())["rows"][0] for d in "ab"]
    assert rows[0]["method"] == "rule"
    assert rows[1]["method"] == "rule (graph every 1) (total_steps 4)" and rows[1]["total_steps"] == 4
