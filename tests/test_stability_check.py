"""scripts/stability_check.py: divergence and accuracy dips in evaluation curves."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from gnnopt.eval import main as eval_main

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "stability_check.py"
spec = importlib.util.spec_from_file_location("stability_check", SCRIPT)
stability_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stability_check)


def test_reads_an_evaluation_folder(tmp_path, capsys):
    out = tmp_path / "eval"
    assert eval_main(["--task", "fmnist17-d1", "--baseline", "adam", "--lr", "0.01", "--steps", "20",
                      "--seeds", "101-102", "--record-every", "5", "--embedded", "--out", str(out)]) == 0
    rows, ok = stability_check.check([out], after=5, floor=0.0)
    assert ok and len(rows) == 1 and rows[0]["seeds"] == [101, 102] and rows[0]["steps"] == 20
    assert rows[0]["lowest"][2] in (10, 15, 20)  # only records after step 5
    capsys.readouterr()
    assert stability_check.main([str(out), "--after", "5", "--floor", "1.01"]) == 1  # nothing reaches 101%
    assert "| NO |" in capsys.readouterr().out


def test_flags_divergence_and_dips_after_the_given_step(tmp_path):
    (tmp_path / "curves.csv").write_text(
        "task,method,seed,step,train_loss,loss,accuracy\n"
        "t,a,1,100,2.3,2.3,0.10\n"  # early: ignored with after=200
        "t,a,1,300,0.5,0.5,0.80\n"
        "t,b,1,300,0.5,0.5,0.80\n"
        "t,b,2,300,nan,nan,0.10\n"
        "t,c,1,400,0.9,0.9,0.15\n")
    rows = {r["method"]: r for r in stability_check.check([tmp_path], after=200, floor=0.2)[0]}
    assert rows["a"]["passed"] and rows["a"]["lowest"] == (0.80, 1, 300)
    assert not rows["b"]["passed"] and rows["b"]["diverged"] == [2]
    assert not rows["c"]["passed"] and rows["c"]["lowest"] == (0.15, 1, 400)


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert stability_check.main([str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_seeds_are_written_as_runs_of_consecutive_ones():
    assert stability_check.seed_ranges([106, 101, 102]) == "101-102, 106"
    assert stability_check.seed_ranges(list(range(101, 111))) == "101-110"
    assert stability_check.seed_ranges([7]) == "7"
