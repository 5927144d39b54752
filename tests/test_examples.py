"""Smoke runs of the scripts in examples/: each ``main(argv)`` in its smoke form, tiny rule."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from gnnopt.rules import create

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (examples/ is not a package)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the sweep scripts import their shared _sweep helper
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rule") / "tiny-pna"
    torch.manual_seed(0)
    create("pna", hidden=8, layers=1).save_pretrained(path)
    return path


def check_outputs(out: Path, tasks: list[str], label: str) -> list[dict]:
    for name in ("results.md", "results.json", "curves.csv", "curves.png"):
        assert (out / name).is_file(), name
    results = (out / "results.md").read_text()
    assert results.startswith(f"> **{label}**") and "± " in results
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["task"] for r in rows] == [t for t in tasks for _ in range(2)]  # the rule, then tuned Adam
    assert [r["method"].split(" ")[0] for r in rows[:2]] == ["tiny-pna", "adam"]
    assert all(r["note"] == label for r in rows)
    return rows


def test_cifar10_width_synthetic_smoke(tmp_path, rule_dir, capsys):
    out = tmp_path / "width"
    code = load_example("cifar10_width").main(["--synthetic", "--rule", str(rule_dir), "--widths", "8,16",
                                               "--out", str(out)])
    assert code == 0
    assert "SYNTHETIC DATA: NOT A RESULT" in capsys.readouterr().out
    rows = check_outputs(out, ["cifar10-cnn-w8", "cifar10-cnn-w16"], "synthetic data: not a result")
    assert rows[0]["steps"] == 10 and rows[0]["seeds"] == [101, 102]
    assert "synthetic (not a result)" in rows[0]["data"]


def test_cifar10_depth_synthetic_smoke(tmp_path, rule_dir, capsys):
    out = tmp_path / "depth"
    code = load_example("cifar10_depth").main(["--synthetic", "--rule", str(rule_dir), "--depths", "1",
                                               "--steps", "4", "--seeds", "101", "--out", str(out)])
    assert code == 0
    assert "SYNTHETIC DATA: NOT A RESULT" in capsys.readouterr().out
    rows = check_outputs(out, ["cifar10-cnn-d1"], "synthetic data: not a result")
    assert rows[0]["steps"] == 4 and rows[0]["seeds"] == [101]


def test_cifar10_without_data_says_where_to_get_it(tmp_path, rule_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # no download attempt
    code = load_example("cifar10_width").main(["--rule", str(rule_dir), "--data-dir", str(tmp_path),
                                               "--out", str(tmp_path / "out")])
    assert code == 2
    assert "cs.toronto.edu/~kriz/cifar.html" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweeps_need_a_rule_when_none_is_bundled(tmp_path, capsys, monkeypatch):
    module = load_example("cifar10_depth")
    monkeypatch.setattr(sys.modules["_sweep"], "list_pretrained", lambda: [])
    assert module.main(["--synthetic", "--out", str(tmp_path)]) == 2
    assert "--rule" in capsys.readouterr().err


def test_fmnist_generalization_smoke_on_the_embedded_subset(tmp_path, rule_dir, capsys):
    out = tmp_path / "fmnist"
    # w16 and d2 are two layouts; fmnist17-w16 is task 17 itself, reported under the asked name
    code = load_example("fmnist_generalization").main(["--smoke", "--rule", str(rule_dir), "--sweep", "both",
                                                       "--widths", "16", "--depths", "1", "--steps", "6",
                                                       "--out", str(out)])
    assert code == 0
    assert "EMBEDDED FASHIONMNIST SUBSET: NOT A RESULT" in capsys.readouterr().out
    rows = check_outputs(out, ["fmnist17-w16", "fmnist17-d1"], "embedded FashionMNIST subset: not a result")
    assert "embedded subset" in rows[0]["data"]


def test_no_baseline_evaluates_only_the_rules(tmp_path, rule_dir, capsys):
    out = tmp_path / "rules-only"
    code = load_example("fmnist_generalization").main(["--smoke", "--rule", str(rule_dir), "--sweep", "depth",
                                                       "--depths", "1", "--steps", "3", "--no-baseline",
                                                       "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == [rule_dir.name]
    # a stopped sweep resumes: rerun with --resume, every run is read back, none retrained
    code = load_example("fmnist_generalization").main(["--smoke", "--rule", str(rule_dir), "--sweep", "depth",
                                                       "--depths", "1", "--steps", "3", "--no-baseline",
                                                       "--out", str(out), "--resume"])
    assert code == 0
    assert "reused 2 finished runs" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["rows"][0]["test_acc"] == rows[0]["test_acc"]


def test_a_layout_with_two_names_is_trained_once(tmp_path, rule_dir):
    sweep = load_example("_sweep")
    from gnnopt.bench.data import load_dataset

    rows = sweep.run_sweep(["fmnist17", "fmnist17-w16"], [str(rule_dir)], baseline=None, steps=2, seeds=[101],
                           tune_seeds=1, data=load_dataset("fmnist", embedded=True), out=tmp_path,
                           record_every=1, command="test")
    assert [r["task"] for r in rows] == ["fmnist17", "fmnist17-w16"]
    assert rows[0]["test_acc"] == rows[1]["test_acc"]


def test_any_model_reports_graph_coverage_and_the_fallback(rule_dir, capsys):
    assert load_example("any_model").main(["--rule", str(rule_dir), "--steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "covers 5,220 of 5,220 parameter elements" in printed  # the residual CNN: all in the graph
    assert "fit no layer chain" in printed and "embed.weight" in printed and "attn.in_proj_weight" in printed
    assert "UNTRAINED" not in printed


def test_a_broken_rule_path_is_an_error_in_words(tmp_path, capsys):
    code = load_example("cifar10_width").main(["--synthetic", "--rule", str(tmp_path / "missing"), "--widths", "8",
                                               "--out", str(tmp_path / "out")])
    assert code == 2 and "not a checkpoint directory" in capsys.readouterr().err


def test_generalization_table_is_assembled_from_the_sweeps_output(tmp_path, rule_dir, capsys):
    folder = "sweeps/d1"
    code = load_example("fmnist_generalization").main(["--smoke", "--rule", str(rule_dir), "--sweep", "depth",
                                                       "--depths", "1", "--steps", "3", "--out",
                                                       str(tmp_path / folder)])
    assert code == 0
    measured = {r["method"]: r for r in json.loads((tmp_path / folder / "results.json").read_text())["rows"]}
    summary = load_example("generalization_table")
    columns = (summary.Column("rule", ((folder, rule_dir.name),), bold_if_beats="tuned Adam"),
               summary.Column("tuned Adam", ((folder, "adam"),)))
    text = summary.markdown(columns, summary.collect(columns, tmp_path))
    assert text.startswith("> **EMBEDDED FASHIONMNIST SUBSET: NOT A RESULT**")
    d1 = next(line for line in text.splitlines() if line.startswith("| d1 (650) |"))
    adam = next(r for m, r in measured.items() if m.startswith("adam"))
    rule = measured[rule_dir.name]
    assert f"{100 * rule['mean']:.2f} ± {100 * rule['std']:.2f}" in d1
    assert f"{100 * adam['mean']:.2f} ± {100 * adam['std']:.2f} (lr {adam['lr']:.0e}".replace("e-0", "e-") in d1
    assert ("**" in d1) == (rule["mean"] > adam["mean"])  # bold marks a rule above Adam
    w8 = next(line for line in text.splitlines() if line.startswith("| w8 "))
    assert w8.count("not measured") == 2
    # the CLI writes the Markdown and (with matplotlib) the plot
    out = tmp_path / "summary"
    assert summary.main(["--root", str(tmp_path / "nothing-here"), "--out", str(out)]) == 2
    assert "no results.json" in capsys.readouterr().out
    summary.TABLES = {**summary.TABLES, "generalization": (columns, str(out))}
    assert summary.main(["--table", "generalization", "--root", str(tmp_path), "--out", str(out)]) == 0
    assert (out.with_suffix(".md")).read_text() == text
    if importlib.util.find_spec("matplotlib"):
        assert (out.with_suffix(".png")).stat().st_size > 10_000


def test_generalization_table_refuses_two_rows_for_one_cell(tmp_path):
    summary = load_example("generalization_table")
    row = {"task": "fmnist17-d1", "method": "adam (lr 0.01)", "seeds": [101], "mean": 0.5, "std": 0.0}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": [row]}))
    with pytest.raises(ValueError, match="two rows for fmnist17-d1"):
        summary.collect((summary.Column("tuned Adam", (("a", "adam"), ("b", "adam"))),), tmp_path)


@pytest.mark.parametrize("name, page", [("tuning-free", "README.md"), ("generalization", "docs/RESULTS.md")])
def test_the_documented_tables_are_the_ones_the_runs_give(name, page):
    """Every row of the README's tuning-free table and of docs/RESULTS.md's generalization
    table is what generalization_table.py assembles from the committed results, and so is
    the summary.md beside the plot: no number in them is typed by hand."""
    summary = load_example("generalization_table")
    root = EXAMPLES.parent
    columns, out = summary.TABLES[name]
    text = summary.markdown(columns, summary.collect(columns, root), name)
    documented = (root / page).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(summary.NETWORKS)
    missing = [line for line in rows if line not in documented]
    stale = f"{page}'s {name} table is stale; rerun examples/generalization_table.py --table {name}:\n"
    assert not missing, stale + "\n".join(missing)
    assert (root / out).with_suffix(".md").read_text() == text, stale
