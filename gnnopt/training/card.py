"""The model card of a shipped checkpoint, generated from its recipe and the evaluations it names.

Nothing on the card is typed by hand: the recipe (stages, why, hardware), each stage's record
(``recipes/<name>/stages/<s>/``: the selection and the wall clock up to it) and the tables that
``python -m gnnopt.eval`` wrote (``results.json`` / ``results.md`` under ``recipes/<name>/evals/``).

    python -m gnnopt.training card pna-fmnist17            # regenerate pretrained/pna-fmnist17/README.md
    python -m gnnopt.training card pna-fmnist17 --ship     # and copy runs/pna-fmnist17/<ship>/best's weights
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..bench.baselines import list_baselines
from ..bench.report import format_table
from ..hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, atomic_write
from ..rules import UpdateRule
from .recipe import Recipe, command, shipped


#: the plot across networks, beside the card in the checkpoint folder
SUMMARY_PLOT = "summary.png"


def _is_baseline(row: dict[str, Any]) -> bool:
    return "tuning_val_acc" in row or row["method"].split(" ")[0] in list_baselines()


def summarize(results: dict[str, dict[str, Any]], roles: dict[str, str]) -> list[str]:
    """Sentences computed from the evaluations (``results`` and ``roles`` by folder): the margin
    of each rule row over each tuned baseline on its task, and any change between a reported
    step and the end of a long run. A baseline counts from the rule's own folder, or from any
    baseline folder with the same steps and seeds."""
    lines = []
    tuned = [(d, r) for d, found in results.items() for r in found["rows"] if "tuning_val_acc" in r]
    for d, found in results.items():
        if roles[d] != "rule":
            continue
        for row in (r for r in found["rows"] if not _is_baseline(r)):
            for where, base in tuned:
                same_run = (base["steps"], base["seeds"]) == (row["steps"], row["seeds"])
                if base["task"] != row["task"] or (where != d and not same_run):
                    continue
                margin = 100 * (row["mean"] - base["mean"])
                lines.append(f"{row['task']}, {row['method']}, {row['steps']} steps: {margin:+.2f} points against "
                             f"{base['method']} "
                             f"({100 * row['mean']:.2f}% vs {100 * base['mean']:.2f}%, {len(row['seeds'])} seeds).")
            for step, at in sorted(row.get("at", {}).items(), key=lambda kv: int(kv[0])):
                change = 100 * (row["mean"] - at["mean"])
                verb = "falls" if change < 0 else "rises"
                lines.append(f"{row['task']}, {row['method']}: test accuracy {verb} from {100 * at['mean']:.2f}% "
                             f"after {step} steps to {100 * row['mean']:.2f}% after {row['steps']} "
                             f"({len(row['seeds'])} seeds).")
    return lines or ["these evaluations hold no tuned baseline and no long-run figure for this rule."]


def stage_lines(recipe: Recipe) -> tuple[list[str], float]:
    """One line per stage (selection, where it stopped, wall clock up to the selected step) and
    the total wall clock in seconds, read from the stage records."""
    lines, total = [], 0.0
    for stage in recipe.stages:
        folder = recipe.root / "stages" / stage.name
        if not (folder / "selected.json").is_file():
            lines.append(f"- `{stage.name}`: no record yet (`python -m gnnopt.training recipe {recipe.name} --record`)")
            continue
        selected = json.loads((folder / "selected.json").read_text())
        if stage.distills:  # the log's seconds are cumulative; collecting the data is not timed
            info = selected["distillation"]
            metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
            seconds = next((r["seconds"] for r in metrics if r["step"] == info["step"]), 0.0)
            total += seconds
            lines.append(f"- `{stage.name}`: distilled, selected at step {info['step']} of {info['steps']} "
                         f"(held-out relative error {info['held_out_error']:.2g}); {seconds / 60:.0f} min of "
                         f"training up to that step (collecting the teacher's trajectories not timed)")
            continue
        sel = selected.get("selection") or {}
        step = sel.get("step", selected.get("outer_step"))
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        upto = [r for r in metrics if step is None or r["step"] <= step]
        seconds = sum(r.get("seconds", 0.0) + r.get("val_seconds", 0.0) for r in upto)
        timed = any("val_seconds" in r for r in upto)
        total += seconds
        val = f", validation accuracy {100 * sel['val_acc']:.2f}%" if "val_acc" in sel else ""
        last = metrics[-1]["step"] if metrics else step
        lines.append(f"- `{stage.name}`: selected at outer step {step} of a run stopped at {last} "
                     f"({stage.config.outer_steps} planned){val}; {seconds / 60:.0f} min up to that step"
                     + ("" if timed else " (validation episodes not timed)"))
    return lines, total


def model_card(recipe: Recipe, rule: UpdateRule) -> str:
    results = {item["dir"]: json.loads((recipe.root / item["dir"] / "results.json").read_text())
               for item in recipe.evaluations if (recipe.root / item["dir"] / "results.json").is_file()}
    pending = [f"`python -m gnnopt.eval {' '.join(item['args'])}`" for item in recipe.evaluations
               if item["dir"] not in results]
    roles = {item["dir"]: item.get("role", "rule") for item in recipe.evaluations}
    if not results:
        raise ValueError(f"recipe {recipe.name!r} names no evaluation: a model card needs at least one")
    tables = []
    for d, found in results.items():
        rows = found["rows"] if roles[d] == "rule" else [r for r in found["rows"] if _is_baseline(r)]
        tables.append(f"{format_table(rows)}\n\nCommand: `{found.get('command', d)}`")
    findings = "\n".join(f"- {line}" for line in summarize(results, roles))
    if pending:
        tables.append("Not run yet (`@ship` is this checkpoint): " + "; ".join(pending) + ".")
    stages, total = stage_lines(recipe)
    tasks = sorted({t for s in recipe.stages for t in s.config.task_names}, key=lambda t: (t != "fmnist17", t))
    weights = sum(p.numel() for p in rule.parameters())
    steps = "\n".join(f"{i}. `{s.name}`: {s.why}" for i, s in enumerate(recipe.stages, 1))
    across = ""
    if recipe.summary:
        table = Path(recipe.summary).with_suffix(".md").read_text().strip()
        across = (f"## Across networks\n\nTest accuracy after 1,000 steps on FashionMNIST CNNs of other widths and "
                  f"depths, with nothing tuned for the rule:\n\n{table}\n\n![test accuracy per network]"
                  f"({SUMMARY_PLOT})\n\n")
    shipping = (f"Shipped: stage `{recipe.ship}`'s selected weights with `{json.dumps(recipe.ship_config)}` set in "
                f"their configuration (options that change no weight). {recipe.ship_why}\n\n"
                if recipe.ship_config else "")
    shown = Recipe.load(recipe.root)  # the commands as a reader runs them: in runs/, wherever these ran
    commands = "\n".join(command(s.config, Path("runs") / recipe.name / s.name) for s in shown.stages)
    how = "distilled" if all(s.distills for s in recipe.stages) else "meta-trained"
    return f"""---
library_name: gnnopt
tags: [learned-optimizer, gnnopt]
---

# `{recipe.name}`: a gnnopt `{rule.name}` rule {how} on {', '.join(tasks)} (FashionMNIST)

{recipe.description} {weights:,} weights. Use it in place of Adam:

```python
from gnnopt import GNNOptimizer
opt = GNNOptimizer.from_pretrained("{recipe.name}", model.named_parameters())
```

{across}## Evaluation

Test accuracy after the stated number of steps, written by `python -m gnnopt.eval` (mean ± std
over seeds, full FashionMNIST test set; a baseline's learning rate tuned on the validation
split where the table says "tuned"). In short:

{findings}

{chr(10).join(chr(10) + t + chr(10) for t in tables)}
## Meta-training recipe

`python -m gnnopt.training recipe {recipe.name}` runs these stages in order (resumable):

{steps}

```bash
{commands}
```

{shipping}Rule configuration:

```json
{json.dumps(rule.config, indent=2)}
```

## Compute

Hardware: {recipe.hardware}. Wall clock of meta-training, about {total / 60:.0f} min in all:
{chr(10).join(stages)}
"""


def write_card(recipe: Recipe, dest: Path, *, runs: Path | None = None) -> Path:
    """Write ``dest/<name>/README.md``; with ``runs``, first copy the shipped stage's selected
    weights from ``runs/<name>/<ship>/best`` (with the recipe's ``ship_config``). Everything is
    read before anything is written."""
    target = dest / recipe.name
    source = shipped(recipe, runs) if runs is not None else target
    rule = UpdateRule.from_checkpoint_dir(source)
    card = model_card(recipe, rule)
    plot = Path(recipe.summary).with_suffix(".png") if recipe.summary else None
    target.mkdir(parents=True, exist_ok=True)
    if plot is not None and plot.is_file():
        atomic_write(target / SUMMARY_PLOT, lambda p: shutil.copyfile(plot, p))
    if runs is not None:
        for file in (CONFIG_NAME, WEIGHTS_NAME):
            atomic_write(target / file, lambda p, src=source / file: shutil.copyfile(src, p))
    atomic_write(target / CARD_NAME, lambda p: Path(p).write_text(card))
    return target / CARD_NAME
