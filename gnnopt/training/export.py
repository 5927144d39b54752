"""Ship a meta-training run's selected rule as a bundled checkpoint with a model card.

    python -m gnnopt.training.export training/pna-multi-fmnist17 --name pna-fmnist17 \
        --eval training/pna-multi-fmnist17/eval-1000 --eval training/pna-multi-fmnist17/eval-5000 \
        --hardware "a 2-core AMD EPYC cloud VM, CPU only"

copies ``<run>/best/`` to ``pretrained/<name>/`` (``config.json``, ``model.safetensors``)
and writes its ``README.md`` from files only: the recipe (``<run>/recipe.sh``), the
selection record and the meta-training wall clock (``<run>/metrics.jsonl``, following
``init``/``init_head`` back to the runs they came from), and the evaluation table that
``python -m gnnopt.eval`` wrote (``results.md``). Nothing on the card is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ..eval import format_table
from ..hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, _atomic_write, load_rule_from_dir
from .checkpoint import read_metrics


def lineage(run: Path) -> list[dict[str, Any]]:
    """The run, then the runs its ``init``/``init_head`` checkpoints were selected from.

    Each entry: ``run`` (path), ``step`` (the selected outer step), ``last_step`` (where the
    run stopped), ``planned`` (its ``outer_steps``), ``selection``, ``seconds`` (wall clock of
    outer steps and validations up to the selected step), ``timed_validation`` and ``tasks``.
    """
    chain, seen = [], set()
    todo = [run / "best"]
    while todo:
        best = todo.pop(0).resolve()
        if best in seen or not (best / CONFIG_NAME).is_file() or not (best.parent / "metrics.jsonl").is_file():
            continue
        seen.add(best)
        config = json.loads((best / CONFIG_NAME).read_text())
        selection = config.get("selection") or {}
        step = selection.get("step", config.get("outer_step"))
        every = read_metrics(best.parent)
        records = [r for r in every if step is None or r["step"] <= step]
        seconds = sum(r.get("seconds", 0.0) + r.get("val_seconds", 0.0) for r in records)
        training = config.get("training", {})
        chain.append({"run": best.parent, "step": step, "last_step": every[-1]["step"] if every else step,
                      "planned": training.get("outer_steps"), "selection": selection, "seconds": seconds,
                      "timed_validation": any("val_seconds" in r for r in records),
                      "tasks": [t.strip() for t in training.get("task", "").split(",") if t.strip()]})
        todo += [Path(training[k]) for k in ("init", "init_head") if training.get(k)]
    return chain


def recipe_command(run: Path) -> str:
    """The command lines of ``<run>/recipe.sh`` (comments and shell set-up dropped)."""
    path = run / "recipe.sh"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: every shipped checkpoint needs its recipe")
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "set "))]
    return "\n".join(lines)


def _results(dirs: list[Path]) -> dict[Path, dict[str, Any]]:
    """Each folder's ``results.json`` (its ``rows`` and ``command``), read once."""
    return {d: json.loads((d / "results.json").read_text()) for d in dict.fromkeys(dirs)}


def _tuned(rows: list[dict]) -> list[dict]:
    """The rows of baselines whose learning rate was tuned (the margins are taken against them)."""
    return [r for r in rows if "tuning_val_acc" in r]


def summarize(results: dict[Path, dict[str, Any]], eval_dirs: list[Path], labels: set[str]) -> list[str]:
    """Sentences computed from the evaluations' ``results.json`` (``results``, by folder: the
    ``eval_dirs`` and the baselines' folders): the margin of the rule (rows labelled one of
    ``labels``) over each tuned baseline, and any fall between a reported step and the end of
    a long run. A baseline is a row with a tuned learning rate in the same folder, or in
    another folder of ``results`` on the same task, steps and seeds."""
    lines = []
    tuned = [(d, r) for d, found in results.items() for r in _tuned(found["rows"])]
    for d in eval_dirs:
        for row in (r for r in results[d]["rows"] if r["method"] in labels):
            for where, base in tuned:
                same_run = (base["steps"], base["seeds"]) == (row["steps"], row["seeds"])
                if base["task"] != row["task"] or (where != d and not same_run):
                    continue
                margin = 100 * (row["mean"] - base["mean"])
                lines.append(f"{row['task']}, {row['steps']} steps: {margin:+.2f} points against {base['method']} "
                             f"({100 * row['mean']:.2f}% vs {100 * base['mean']:.2f}%, {len(row['seeds'])} seeds).")
            for step, at in sorted(row.get("at", {}).items(), key=lambda kv: int(kv[0])):
                change = 100 * (row["mean"] - at["mean"])
                verb = "falls" if change < 0 else "rises"
                lines.append(f"{row['task']}: test accuracy {verb} from {100 * at['mean']:.2f}% after {step} steps "
                             f"to {100 * row['mean']:.2f}% after {row['steps']} ({len(row['seeds'])} seeds).")
    return lines or ["these evaluations hold no tuned baseline and no long-run figure for this rule."]


def baseline_table(results: dict[Path, dict[str, Any]], baseline_dirs: list[Path]) -> str:
    """The tuned baselines' rows of ``baseline_dirs`` (their rules' rows left out) and the
    commands that produced them (``results``: the folders' ``results.json``)."""
    if not baseline_dirs:
        return ""
    table = format_table([r for d in baseline_dirs for r in _tuned(results[d]["rows"])])
    commands = [f"- `{results[d].get('command', d)}`" for d in baseline_dirs]
    return "\n".join(["Tuned baselines measured in other folders, compared against above:", "", table,
                      "", "Commands:", *commands])


def model_card(name: str, run: Path, eval_dirs: list[Path], hardware: str, baseline_dirs: list[Path] = ()) -> str:
    rule = load_rule_from_dir(run / "best")
    if not eval_dirs:
        raise ValueError("a model card needs at least one evaluation (--eval)")
    results = "\n\n".join((d / "results.md").read_text().strip() for d in eval_dirs)
    chain = lineage(run)
    if not chain:
        raise FileNotFoundError(f"{run}: no selected checkpoint (best/) with metrics.jsonl")
    total = sum(c["seconds"] for c in chain)
    parts = []
    for c in chain:
        sel = c["selection"]
        val = f", validation accuracy {100 * sel['val_acc']:.2f}%" if "val_acc" in sel else ""
        note = "" if c["timed_validation"] else " (validation episodes not timed)"
        parts.append(f"- `{c['run'].name}`: selected at outer step {c['step']} of a run stopped at "
                     f"{c['last_step']} ({c['planned']} planned){val}; "
                     f"{c['seconds'] / 60:.0f} min up to that step{note}")
    weights = sum(p.numel() for p in rule.parameters())
    tasks = sorted({t for c in chain for t in c["tasks"]}, key=lambda t: (t != "fmnist17", t))
    trained_on = f"{', '.join(tasks)} (FashionMNIST)" if tasks else "FashionMNIST"
    labels = {f"{run.name}/best", name, str(run / "best")}
    found = _results([*eval_dirs, *baseline_dirs])
    findings = "\n".join(f"- {line}" for line in summarize(found, eval_dirs, labels))
    baselines = baseline_table(found, list(baseline_dirs))
    if baselines:
        results += "\n\n" + baselines
    return f"""---
library_name: gnnopt
tags: [learned-optimizer, gnnopt]
---

# `{name}`: a gnnopt `{rule.name}` rule meta-trained on {trained_on}

{weights:,} weights. Use it in place of Adam:

```python
from gnnopt import GNNOptimizer
opt = GNNOptimizer.from_pretrained("{name}", model.named_parameters())
```

## Evaluation

Test accuracy after the stated number of steps, written by `python -m gnnopt.eval`
(a baseline's learning rate tuned on the validation split). In short:

{findings}

{results}

## Meta-training recipe

```bash
{recipe_command(run)}
```

Rule configuration:

```json
{json.dumps(rule.config, indent=2)}
```

## Compute

Hardware: {hardware}. Wall clock of meta-training, about {total / 60:.0f} min in all:
{chr(10).join(parts)}
"""


def export(run: str | Path, eval_dirs: list[str | Path], *, name: str | None = None,
           dest: str | Path = "pretrained", hardware: str, baseline_dirs: list[str | Path] = ()) -> Path:
    """Copy ``run/best`` to ``dest/name`` with a card holding every ``eval_dirs`` results table."""
    run = Path(run)
    name = name or run.name
    target = Path(dest) / name
    # everything is read before anything is written
    card = model_card(name, run, [Path(d) for d in eval_dirs], hardware, [Path(d) for d in baseline_dirs])
    target.mkdir(parents=True, exist_ok=True)
    for file in (CONFIG_NAME, WEIGHTS_NAME):
        _atomic_write(target / file, lambda p, src=run / "best" / file: shutil.copyfile(src, p))
    _atomic_write(target / CARD_NAME, lambda p: Path(p).write_text(card))
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gnnopt.training.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run directory (with best/, metrics.jsonl, recipe.sh)")
    p.add_argument("--eval", type=Path, action="append", required=True,
                   help="output directory of python -m gnnopt.eval (repeatable)")
    p.add_argument("--baseline-eval", type=Path, action="append", default=[],
                   help="an output directory whose tuned baselines (same task, steps and seeds) the rule is "
                        "compared against, e.g. one measured before the rule existed (repeatable)")
    p.add_argument("--name", default=None, help="checkpoint name (default: the run directory's name)")
    p.add_argument("--dest", type=Path, default=Path("pretrained"))
    p.add_argument("--hardware", required=True, help="where the meta-training ran, for the model card")
    args = p.parse_args(argv)
    try:
        target = export(args.run, args.eval, name=args.name, dest=args.dest, hardware=args.hardware,
                        baseline_dirs=args.baseline_eval)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {target}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
