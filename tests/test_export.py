"""``python -m gnnopt.training.export``: a run's selected rule becomes a bundled checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from gnnopt import GNNOptimizer
from gnnopt.data import load_dataset
from gnnopt.eval import main as eval_main
from gnnopt.tasks import get_task
from gnnopt.training import TrainConfig, meta_train
from gnnopt.training.export import main as export_main


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist", embedded=True)


def test_export_writes_a_loadable_checkpoint_and_a_card_from_files(tmp_path, data):
    base = TrainConfig(rule="ff", rule_config={"hidden": 8}, outer_steps=2, inner_steps=3, eval_every=1,
                       eval_steps=5, embedded=True)
    meta_train(base, tmp_path / "base", data=data, progress=False)
    tuned_cfg = TrainConfig(**{**base.to_dict(), "init": str(tmp_path / "base" / "best")})
    run = tmp_path / "tuned"
    meta_train(tuned_cfg, run, data=data, progress=False)
    (run / "recipe.sh").write_text("#!/usr/bin/env bash\n# a comment\nset -e\npython -m gnnopt.training --rule ff \\\n"
                                   "  --out tuned \"$@\"\n")
    evals = tmp_path / "eval"
    assert eval_main(["--task", "fmnist17", "--rule", str(run / "best"), "--baseline", "adam", "--tune-seeds", "1",
                      "--steps", "5", "--seeds", "1", "--embedded", "--out", str(evals)]) == 0
    dest = tmp_path / "pretrained"
    assert export_main([str(run), "--eval", str(evals), "--name", "ff-test", "--dest", str(dest),
                        "--hardware", "a test machine"]) == 0
    target = dest / "ff-test"
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (target / name).is_file(), name
    opt = GNNOptimizer.from_pretrained(str(target), get_task("fmnist17").build_model().named_parameters())
    shipped = dict(opt.rule.state_dict())
    selected = GNNOptimizer.from_pretrained(str(run / "best"), get_task("fmnist17").build_model()).rule
    for k, v in selected.state_dict().items():
        assert torch.equal(v, shipped[k]), k
    card = (target / "README.md").read_text()
    results = (evals / "results.md").read_text()
    table = [line for line in results.splitlines() if line.startswith("| fmnist17")]
    assert len(table) == 2 and all(line in card for line in table)  # the eval's rows, verbatim
    assert "python -m gnnopt.training --rule ff" in card and "# a comment" not in card
    assert "points against adam (lr " in card  # the margin, computed from results.json
    assert "a test machine" in card and "`tuned`" in card and "`base`" in card  # the init run's compute too


def test_export_compares_against_baselines_measured_in_another_folder(tmp_path, data):
    """``--baseline-eval``: a rule evaluated alone is compared with the tuned Adam of an
    earlier evaluation on the same task, steps and seeds; other steps are not compared."""
    cfg = TrainConfig(rule="ff", rule_config={"hidden": 8}, outer_steps=1, inner_steps=3, eval_every=1,
                      eval_steps=5, embedded=True)
    run = tmp_path / "run"
    meta_train(cfg, run, data=data, progress=False)
    (run / "recipe.sh").write_text("python -m gnnopt.training --rule ff --out run\n")
    common = ["--task", "fmnist17", "--seeds", "1", "--embedded", "--tune-seeds", "1"]
    assert eval_main([*common, "--baseline", "adam", "--steps", "5", "--out", str(tmp_path / "adam")]) == 0
    assert eval_main([*common, "--baseline", "adam", "--steps", "4", "--out", str(tmp_path / "adam4")]) == 0
    assert eval_main([*common, "--rule", str(run / "best"), "--steps", "5", "--out", str(tmp_path / "rule")]) == 0
    dest = tmp_path / "pretrained"
    assert export_main([str(run), "--eval", str(tmp_path / "rule"), "--baseline-eval", str(tmp_path / "adam"),
                        "--baseline-eval", str(tmp_path / "adam4"), "--name", "ff-test", "--dest", str(dest),
                        "--hardware", "a test machine"]) == 0
    card = (dest / "ff-test" / "README.md").read_text()
    adam = json.loads((tmp_path / "adam" / "results.json").read_text())["rows"][0]
    assert card.count("points against adam") == 1  # the 5-step Adam only
    assert f"vs {100 * adam['mean']:.2f}%" in card
    assert "Tuned baselines measured in other folders" in card and "--steps 4" in card


def test_export_without_recipe_or_eval_is_an_error(tmp_path, data, capsys):
    cfg = TrainConfig(rule="ff", rule_config={"hidden": 8}, outer_steps=1, inner_steps=2, embedded=True)
    meta_train(cfg, tmp_path / "run", data=data, progress=False)
    code = export_main([str(tmp_path / "run"), "--eval", str(tmp_path / "none"), "--dest", str(tmp_path / "p"),
                        "--hardware", "x"])
    assert code == 2 and "error" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # nothing half-written
