"""Recipes, model cards and the generated training CLI: one command per shipped checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gnnopt.bench.tasks import list_tasks
from gnnopt.training import TrainConfig
from gnnopt.training.__main__ import build_parser
from gnnopt.training.__main__ import main as training_main
from gnnopt.training.card import write_card
from gnnopt.training.export import main as export_main
from gnnopt.training.recipe import Recipe, shipped

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = "pna-fmnist17"


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_dry_run_prints_every_stage_and_runs_nothing(at_root, tmp_path, capsys):
    recipe = Recipe.load(SHIPPED, tmp_path)
    assert training_main(["recipe", SHIPPED, "--dry-run", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for i, stage in enumerate(recipe.stages, 1):
        assert f"[{i}/{len(recipe.stages)}] {stage.name}: not started" in out
        assert f"--out {tmp_path / SHIPPED / stage.name}" in out
    # a later stage starts from the earlier stage's selected rule
    assert f"--init-head {tmp_path / SHIPPED / 'ff' / 'best'}" in out
    assert not any(tmp_path.iterdir())


def test_recipe_stages_are_the_shipped_runs(at_root):
    """The recipe's shipped stage is the one the bundled weights came from: a distillation of
    the meta-trained teacher, with the settings its record holds."""
    recipe = Recipe.load(SHIPPED)
    shipped = json.loads((ROOT / "pretrained" / SHIPPED / "config.json").read_text())
    stage = recipe.stage(recipe.ship)
    assert stage.distills and stage.config.teacher == str(Path("runs") / SHIPPED / "unroll100" / "best")
    info = shipped["distillation"]
    assert (info["steps"], info["lr"]) == (stage.config.steps, stage.config.lr)
    for key, value in stage.config.rule_config.items():
        assert shipped["config"][key] == value
    assert {k: shipped["config"][k] for k in stage.config.teacher_config} == stage.config.teacher_config
    # the teacher's own stage is the configuration the teacher was selected from
    record = json.loads((ROOT / "recipes" / SHIPPED / "stages" / "unroll100" / "selected.json").read_text())
    expected = TrainConfig.normalize({**record["training"], "init": str(Path("runs") / SHIPPED / "multi" / "best")})
    assert recipe.stage("unroll100").config.to_dict() == expected


def test_a_distillation_stage_runs_after_its_teacher(at_root, tmp_path, capsys):
    """A ``"kind": "distill"`` stage takes an earlier stage's rule as its teacher (with
    ``teacher_config`` set), collects and trains in its run folder, and is then done."""
    raw = {"name": "tiny-recipe", "stages": [
        {"name": "ff", "config": {"task": "fmnist17-d1", "rule": "ff", "rule_config": {"hidden": 8}}},
        {"name": "lean", "kind": "distill", "config": {
            "teacher": "@ff", "teacher_config": {"graph_every": 2}, "tasks": "fmnist17-d1", "rule": "pna",
            "rule_config": {"hidden": 8, "layers": 1, "edge_hidden": 4, "head_hidden": 8}}}],
        "evaluations": []}
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "recipe.json").write_text(json.dumps(raw))
    args = ["recipe", str(tmp_path / "recipe"), "--smoke", "--runs", str(tmp_path / "runs"), "--no-progress"]
    assert training_main(args) == 0
    run = tmp_path / "runs" / "tiny-recipe" / "lean"
    assert json.loads((run / "teacher" / "config.json").read_text())["config"]["graph_every"] == 2
    student = json.loads((run / "best" / "config.json").read_text())
    assert student["rule"] == "pna" and student["config"]["graph_every"] == 2  # the teacher's update form
    assert [json.loads(line)["step"] for line in (run / "distill.jsonl").read_text().splitlines()] == [2, 4]
    capsys.readouterr()
    assert training_main(args + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "lean: done" in out and f"distill collect --teacher {run / 'teacher'}" in out
    raw["stages"][1]["config"]["teacher_config"] = {"hidden": 4}
    (tmp_path / "recipe" / "recipe.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="teacher_config may set only"):
        Recipe.load(tmp_path / "recipe")
    with pytest.raises(ValueError, match="not an earlier stage"):
        raw["stages"].reverse()
        (tmp_path / "recipe" / "recipe.json").write_text(json.dumps(raw))
        Recipe.load(tmp_path / "recipe")


def test_smoke_runs_the_first_stage_then_skips_it(at_root, tmp_path, capsys):
    args = ["recipe", SHIPPED, "--smoke", "--stages", "ff", "--runs", str(tmp_path), "--no-progress"]
    assert training_main(args) == 0
    run = tmp_path / SHIPPED / "ff"
    assert (run / "best" / "model.safetensors").is_file()
    assert json.loads((run / "config.json").read_text())["training"]["embedded"] is True
    capsys.readouterr()
    assert training_main(args) == 0
    assert "ff: done" in capsys.readouterr().out


BUNDLED = sorted(p.name for p in (ROOT / "pretrained").iterdir() if (p / "config.json").is_file())


@pytest.mark.parametrize("name", BUNDLED)
def test_card_is_regenerated_exactly_from_the_recipe(at_root, tmp_path, name):
    """Every bundled card is what `python -m gnnopt.training card` writes from its recipe:
    nothing typed by hand, and the configuration is the recipe's shipped one."""
    recipe = Recipe.load(name)
    shutil.copytree(ROOT / "pretrained" / name, tmp_path / name)
    card = write_card(recipe, tmp_path)
    assert card.read_text() == (ROOT / "pretrained" / name / "README.md").read_text()
    config = json.loads((ROOT / "pretrained" / name / "config.json").read_text())["config"]
    assert config == {**config, **recipe.ship_config}
    if recipe.summary:  # the plot across networks travels with the card
        assert "## Across networks" in card.read_text() and "(summary.png)" in card.read_text()
        plot = (tmp_path / name / "summary.png").read_bytes()
        assert plot == (ROOT / "pretrained" / name / "summary.png").read_bytes()


def test_export_alias_needs_the_new_arguments(at_root, capsys):
    assert export_main(["no-such-recipe"]) == 2
    assert "no recipe 'no-such-recipe'" in capsys.readouterr().err


def test_help_is_grouped_and_lists_tasks_and_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for group in ("task options", "rule options", "objective options", "episodes options",
                  "meta-optimizer options", "selection options", "run options"):
        assert group in text
    assert all(task in text for task in list_tasks())
    assert "--inner-steps INNER_STEPS inner steps of an episode (default: 100)" in text
    assert "--second-order, --no-second-order" in text


def test_every_config_field_has_a_flag():
    flags = {a.dest for a in build_parser()._actions}
    assert {f for f in TrainConfig().to_dict()} <= flags


def test_resume_may_extend_a_run_but_not_change_it(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--rule", "ff", "--outer-steps", "2", "--inner-steps", "3", "--eval-every", "2", "--eval-steps", "3",
            "--embedded", "--no-progress", "--out", str(out)]
    assert training_main(base) == 0
    assert training_main(["--out", str(out), "--resume", "--lr", "1e-2", "--no-progress"]) == 2
    assert "--resume cannot change lr" in capsys.readouterr().err
    assert training_main(["--out", str(out), "--resume", "--outer-steps", "3", "--no-progress"]) == 0
    stored = json.loads((out / "config.json").read_text())["training"]
    assert stored["outer_steps"] == 3
    assert training_main(["--out", str(out), "--resume", "--outer-steps", "1", "--no-progress"]) == 2
    assert "already at outer step 3" in capsys.readouterr().err
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_card_ship_copies_the_selected_weights_first(at_root, tmp_path):
    recipe = Recipe.load(SHIPPED, tmp_path / "runs")
    best = tmp_path / "runs" / SHIPPED / recipe.ship / "best"
    shutil.copytree(ROOT / "pretrained" / SHIPPED, best)
    assert training_main(["card", SHIPPED, "--ship", "--runs", str(tmp_path / "runs"),
                          "--dest", str(tmp_path / "out")]) == 0
    shipped = tmp_path / "out" / SHIPPED
    assert (shipped / "model.safetensors").read_bytes() == (best / "model.safetensors").read_bytes()
    config = json.loads((shipped / "config.json").read_text())["config"]
    assert recipe.ship_config and config == {**config, **recipe.ship_config}
    assert (shipped / "README.md").read_text() == (ROOT / "pretrained" / SHIPPED / "README.md").read_text()
    shutil.rmtree(best)
    assert training_main(["card", SHIPPED, "--ship", "--runs", str(tmp_path / "runs"),
                          "--dest", str(tmp_path / "other")]) == 2  # nothing to ship: nothing written
    assert not (tmp_path / "other").exists()


def test_ship_config_sets_the_update_form_on_the_selected_weights(at_root, tmp_path):
    """``ship_config`` changes the shipped rule's configuration, not its weights, and may set
    only options that change no weight."""
    recipe = Recipe.load(SHIPPED, tmp_path)
    best = tmp_path / SHIPPED / recipe.ship / "best"
    shutil.copytree(ROOT / "pretrained" / SHIPPED, best)
    raw = json.loads((best / "config.json").read_text())
    raw["config"] = {k: v for k, v in raw["config"].items() if k not in recipe.ship_config}  # as trained
    (best / "config.json").write_text(json.dumps(raw))
    out = shipped(recipe, tmp_path)
    assert out == tmp_path / SHIPPED / "shipped" / SHIPPED  # evaluations label it by the checkpoint's name
    assert json.loads((out / "config.json").read_text())["config"] == {**raw["config"], **recipe.ship_config}
    assert (out / "model.safetensors").read_bytes() == (best / "model.safetensors").read_bytes()
    bad = json.loads((ROOT / "recipes" / SHIPPED / "recipe.json").read_text())
    bad["ship_config"] = {"hidden": 32}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "recipe.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="ship_config may set only"):
        Recipe.load(tmp_path / "bad")
