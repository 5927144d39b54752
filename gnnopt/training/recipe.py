"""Recipes: every stage of a shipped checkpoint in one file, reproduced by one command.

``recipes/<name>/recipe.json`` (run from the repository root)::

    {"name": "pna-fmnist17", "description": "...", "hardware": "...", "threads": 1,
     "stages": [{"name": "ff", "why": "...", "config": {TrainConfig options}}, ...],
     "ship": "unroll100",
     "ship_config": {"fan_in_power": 0.5, ...}, "ship_why": "...",
     "summary": "results/tuning-free/summary",
     "evaluations": [{"dir": "evals/shipped-1000", "role": "rule" | "baseline",
                      "args": [python -m gnnopt.eval arguments]}, ...]}

A stage's ``init``/``init_head`` may name an earlier stage as ``"@stage"`` (its selected
rule); ``"@ship"`` in evaluation arguments is the shipped rule: the shipped stage's selected
weights with ``ship_config`` (rule options that change no weight: the update form and the
optimizer's defaults, :data:`gnnopt.rules.base.UPDATE_FORM_DEFAULTS`) set in its config. Stage
``s`` runs in ``RUNS/<name>/s`` (``RUNS`` = ``runs`` by default, not tracked): a finished
stage is skipped, a stopped one resumed, so the command can be rerun until it is done.
``recipes/<name>/stages/<s>/`` keeps each stage's compact record (``metrics.jsonl``,
``selected.json``) and ``recipes/<name>/evals/`` the evaluation tables: the model card is
generated from them (:mod:`.card`), with the table and plot across networks that ``summary``
names (``SUMMARY.md`` and ``SUMMARY.png``, from the repository root: written by
``examples/generalization_table.py``).

    python -m gnnopt.training recipe pna-fmnist17 --dry-run    # what would run, and where it stands
    python -m gnnopt.training recipe pna-fmnist17              # run (or resume) every stage
    python -m gnnopt.training recipe pna-fmnist17 --record --evaluate
    python -m gnnopt.training card pna-fmnist17 [--ship]       # model card (and weights) into pretrained/
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from .. import hub
from ..rules.base import UPDATE_FORM_DEFAULTS
from .config import TrainConfig
from .distill import DistillConfig

#: options a ``--smoke`` run overrides: one tiny stage in seconds, on the embedded subset
SMOKE = {"outer_steps": 2, "inner_steps": 4, "eval_steps": 4, "eval_every": 1, "eval_seeds": 1, "save_every": 1,
         "unroll": 2, "segment_steps": None, "embedded": True, "random_inner_steps_after": None, "meta_batch_size": 1}


@dataclasses.dataclass(frozen=True)
class Stage:
    """A meta-training stage, or (``"kind": "distill"`` in ``recipe.json``) a distillation of
    an earlier stage's rule into another architecture (:class:`.distill.DistillConfig`)."""

    name: str
    why: str
    config: TrainConfig | DistillConfig

    @property
    def distills(self) -> bool:
        return isinstance(self.config, DistillConfig)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A parsed ``recipe.json``; ``root`` is its folder (records and evaluations live there)."""

    name: str
    description: str
    hardware: str
    threads: int | None
    stages: tuple[Stage, ...]
    ship: str
    evaluations: tuple[dict[str, Any], ...]
    root: Path
    ship_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    ship_why: str = ""
    summary: str | None = None

    @classmethod
    def load(cls, name_or_path: str | Path, runs: str | Path = "runs") -> Recipe:
        """Read ``recipes/<name>/recipe.json`` (or a given file or folder); ``@stage``
        references resolve to ``runs/<name>/<stage>/best``."""
        path = Path(name_or_path)
        if not path.exists():
            path = Path("recipes") / str(name_or_path)
        if path.is_dir():
            path = path / "recipe.json"
        if not path.is_file():
            known = sorted(p.name for p in Path("recipes").glob("*") if (p / "recipe.json").is_file())
            raise FileNotFoundError(f"no recipe {name_or_path!r} (run from the repository root; recipes here: "
                                    f"{', '.join(known) or 'none'})")
        try:
            raw = json.loads(path.read_text())
            name, stages = raw["name"], raw["stages"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a recipe ({type(err).__name__}: {err})") from err
        out = Path(runs) / name
        seen: list[str] = []
        parsed = []
        for stage in stages:
            options = dict(stage["config"])
            distills = stage.get("kind", "train") == "distill"
            for key in ("teacher",) if distills else ("init", "init_head"):
                ref = options.get(key)
                if isinstance(ref, str) and ref.startswith("@"):
                    if ref[1:] not in seen:
                        raise ValueError(f"{path}: stage {stage['name']!r} refers to {ref}, not an earlier stage")
                    options[key] = str(out / ref[1:] / "best")
            config = DistillConfig.from_dict(options) if distills else TrainConfig.from_dict(options)
            parsed.append(Stage(stage["name"], stage.get("why", ""), config))
            seen.append(stage["name"])
        ship = raw.get("ship", seen[-1])
        if ship not in seen:
            raise ValueError(f"{path}: ship {ship!r} is not one of its stages ({', '.join(seen)})")
        ship_config = dict(raw.get("ship_config", {}))
        wrong = set(ship_config) - set(UPDATE_FORM_DEFAULTS)
        if wrong:
            raise ValueError(f"{path}: ship_config may set only {', '.join(sorted(UPDATE_FORM_DEFAULTS))} "
                             f"(options that change no weight), not {', '.join(sorted(wrong))}")
        return cls(name, raw.get("description", ""), raw.get("hardware", "not stated"), raw.get("threads"),
                   tuple(parsed), ship, tuple(raw.get("evaluations", ())), path.parent, ship_config,
                   raw.get("ship_why", ""), raw.get("summary"))

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ValueError(f"recipe {self.name!r} has no stage {name!r} ({', '.join(s.name for s in self.stages)})")


def status(out: Path, cfg: TrainConfig | DistillConfig) -> str:
    """``"done"``, ``"stopped at N/M"`` or ``"not started"`` for a stage's run folder."""
    if isinstance(cfg, DistillConfig):
        return cfg.status(out)
    state = out / "trainer_state.json"
    if not state.is_file():
        return "not started"
    step = json.loads(state.read_text())["outer_step"]
    return "done" if step >= cfg.outer_steps else f"stopped at {step}/{cfg.outer_steps}"


def command(cfg: TrainConfig | DistillConfig, out: Path) -> str:
    """The ``python -m gnnopt.training`` command of one stage (options that differ from the
    defaults), or a distillation's two commands (its teacher as the stage writes it)."""
    if isinstance(cfg, DistillConfig):
        argvs = cfg.argv(teacher_dir(out), out)
        return "\n".join("python -m gnnopt.training.distill " + " ".join(
            f"'{a}'" if a.startswith("{") else a for a in argv) for argv in argvs)
    default = TrainConfig().to_dict()
    parts = ["python -m gnnopt.training"]
    for key, value in cfg.to_dict().items():
        if value == default[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            parts.append(f"{flag} {json.dumps(value) if isinstance(value, dict) else value}")
    return " ".join(parts + [f"--out {out}"])


def record(recipe: Recipe, stage: Stage, out: Path) -> Path:
    """Copy a finished stage's compact record into ``recipes/<name>/stages/<stage>/``
    (a distillation's log is its ``metrics.jsonl``)."""
    dest = recipe.root / "stages" / stage.name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / ("distill.jsonl" if stage.distills else "metrics.jsonl"), dest / "metrics.jsonl")
    best = json.loads((out / "best" / "config.json").read_text())
    kept = {k: best[k] for k in ("outer_step", "selection", "training", "distillation") if k in best}
    (dest / "selected.json").write_text(json.dumps(kept, indent=2) + "\n")
    return dest


def shipped_dir(recipe: Recipe, runs: Path) -> Path:
    """Where :func:`shipped` writes the shipped rule: ``RUNS/<name>/shipped/<name>`` (named like
    the checkpoint, so evaluations label it so)."""
    return runs / recipe.name / "shipped" / recipe.name


def shipped(recipe: Recipe, runs: Path) -> Path:
    """:func:`shipped_dir`, holding the shipped stage's selected rule with ``ship_config`` set in
    its ``config.json`` (written afresh from ``RUNS/<name>/<ship>/best`` each time)."""
    source = runs / recipe.name / recipe.ship / "best"
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} holds no selected rule: run stage {recipe.ship!r} first")
    return _configured(source, shipped_dir(recipe, runs), recipe.ship_config)


def teacher_dir(out: Path) -> Path:
    """Where a distillation stage run in ``out`` writes its teacher (see :func:`_configured`)."""
    return out / "teacher"


def _configured(source: Path, dest: Path, options: dict[str, Any]) -> Path:
    """Copy the rule in ``source`` to ``dest`` with ``options`` set in its config."""
    dest.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    config["config"] = {**config["config"], **options}
    for file in source.iterdir():
        if file.is_file() and file.name != "config.json":
            shutil.copyfile(file, dest / file.name)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dest


def run(recipe: Recipe, runs: Path, *, dry_run: bool = False, smoke: bool = False, only: list[str] | None = None,
        do_record: bool = False, evaluate: bool = False, device: str = "cpu", progress: bool = True) -> int:
    """Run (or resume, or with ``dry_run`` describe) the stages of ``recipe`` in order."""
    from .trainer import meta_train, summary

    stages = [recipe.stage(name) for name in only] if only else list(recipe.stages)
    print(f"recipe {recipe.name}: {len(recipe.stages)} stage(s), shipped stage {recipe.ship!r}; "
          f"runs in {runs / recipe.name}")
    for i, stage in enumerate(stages, 1):
        cfg = stage.config
        if smoke:
            cfg = (cfg.smoke() if stage.distills
                   else TrainConfig.from_dict({**cfg.to_dict(), **SMOKE}))
        out = runs / recipe.name / stage.name
        state = status(out, cfg)
        lines = command(cfg, out).replace("\n", "\n  ")
        print(f"\n[{i}/{len(stages)}] {stage.name}: {state}\n  why: {stage.why}\n  {lines}")
        if dry_run:
            continue
        if state == "done":
            pass  # nothing to run, only to record if asked
        elif isinstance(cfg, DistillConfig):  # the teacher as it is used, then collect and train
            source = Path(cfg.teacher)
            if not (source / "config.json").is_file():
                if cfg.teacher in hub.list_pretrained():  # a bundled rule, by name
                    source = hub.resolve(cfg.teacher, local_files_only=True)
                else:
                    raise FileNotFoundError(f"{source} holds no rule: run the teacher's stage first")
            cfg.run(_configured(source, teacher_dir(out), cfg.teacher_config), out)
        else:
            meta_train(cfg, out, resume=state != "not started", device=device, progress=progress)
            print(f"  {summary(out)}")
        if do_record and not smoke:
            print(f"  record: {record(recipe, stage, out)}")
    rule = shipped_dir(recipe, runs)
    if evaluate and not dry_run and any("@ship" in item["args"] for item in recipe.evaluations):
        rule = shipped(recipe, runs)
    for item in recipe.evaluations:
        args = [str(rule) if a == "@ship" else a for a in item["args"]]
        line = "python -m gnnopt.eval " + " ".join(args) + f" --out {recipe.root / item['dir']}"
        print(f"\nevaluation ({item.get('role', 'rule')}): {line}")
        if evaluate and not dry_run:
            from ..bench.cli import main as eval_main

            if eval_main(args + ["--out", str(recipe.root / item["dir"]), "--resume"]) != 0:
                return 1
    return 0
