"""Archive a finished run folder as one compact Markdown record, before it leaves the work tree.

A meta-training run folder (``python -m gnnopt.training --out DIR``) holds megabytes of
weights, trainer state and curves; an evaluation folder (``python -m gnnopt.eval --out DIR``)
holds curves and a run cache. Once a run is finished and its verdict written down, the folder
leaves the work tree (git history keeps it) and this record stays in ``docs/runs/<name>.md``:

- the recipe: ``recipe.sh``'s comments (the question and why) and its command, verbatim;
- the training options (``config.json``'s ``training`` block), compactly;
- the selection (``best/config.json``), where the run stopped (last step of ``metrics.jsonl``
  against the planned ``outer_steps``) and the meta-training wall clock (updates + validation);
- the validation trajectory (every ``metrics.jsonl`` step with ``val_acc``);
- every evaluation table (``eval-*/results.md``, or ``results.md`` of an evaluation folder),
  verbatim with its command, the run's own notes (a ``README.md`` that is not a generated
  model card) and small text files beside them (e.g. a probe script and its output).

Run from the repository root, before deleting the folders::

    python scripts/archive_run.py training/*/ training/experiments/*/ --commit a2a8660

Missing files are skipped: a folder with only an evaluation gives a record of that evaluation.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SMALL_FILE = 8_000  # bytes: extra text files up to this size are copied into the record
EXTRA_SUFFIXES = {".txt": "text", ".py": "python", ".sh": "bash"}
KNOWN = {"recipe.sh", "config.json", "metrics.jsonl", "README.md", "results.md"}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def split_recipe(text: str) -> tuple[str, str]:
    """``(comments, command)`` of a recipe.sh: the ``#`` lines (shebang dropped) joined as
    prose, and every other line but ``set -euo pipefail``, verbatim."""
    comments, command = [], []
    for line in text.splitlines():
        if line.startswith("#!") or line.strip() in ("set -euo pipefail", ""):
            continue
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
        else:
            command.append(line)
    return " ".join(comments), "\n".join(command)


def options(training: dict) -> str:
    """The training block as ``key=value`` pairs, nulls left out."""
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list, str)) else v}"
                     for k, v in training.items() if v is not None and v != {})


def val_table(metrics: list[dict]) -> list[str]:
    """The validation trajectory: one row per step that has ``val_acc``."""
    points = [m for m in metrics if "val_acc" in m]
    if not points:
        return []
    tasks = list(points[0].get("val_acc_by_task", {}))
    head = "| step | val acc (%) |" + "".join(f" {t} (%) |" for t in tasks)
    rows = [head, "|---|---|" + "---|" * len(tasks)]
    for m in points:
        by = m.get("val_acc_by_task", {})
        rows.append(f"| {m['step']} | {_pct(m['val_acc'])} |" + "".join(
            f" {_pct(by[t]) if t in by else ''} |" for t in tasks))
    return rows


def record(run: Path, commit: str) -> str:
    """The Markdown record of one run folder."""
    rel = run.resolve().relative_to(Path.cwd().resolve()).as_posix() if run.is_absolute() else run.as_posix()
    rel = rel.rstrip("/")
    out = [f"# {run.name}", "",
           f"Full run folder (weights, trainer state, curves): `git checkout {commit} -- {rel}`", ""]

    recipe = run / "recipe.sh"
    if recipe.is_file():
        why, command = split_recipe(recipe.read_text())
        out += ["## Question (recipe.sh)", "", why or "(no comments)", "", "```bash", command, "```", ""]

    config = _json(run / "config.json")
    metrics = []
    if (run / "metrics.jsonl").is_file():
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if config or metrics:
        out += ["## Meta-training", ""]
    if config and "training" in config:
        out += [f"Options (`config.json`): `{options(config['training'])}`", ""]
    best = _json(run / "best" / "config.json")
    sel = (best or {}).get("selection")
    if sel:
        tasks = ", ".join(f"{t} {_pct(a)}" for t, a in sel.get("val_acc_by_task", {}).items())
        out += [f"Selected (`best/config.json`): outer step {sel['step']}, validation accuracy "
                f"{_pct(sel['val_acc'])}%" + (f" (per task, %: {tasks})" if tasks else "") + ".", ""]
    elif config:
        out += ["No `best/` checkpoint was kept.", ""]
    if metrics:
        planned = (config or {}).get("training", {}).get("outer_steps")
        last = max(m["step"] for m in metrics)
        train_s = sum(m.get("seconds", 0.0) for m in metrics)
        val_s = sum(m.get("val_seconds", 0.0) for m in metrics)
        stop = f"Last logged outer step: {last}" + (f" of {planned} planned" if planned else "")
        stop += " (finished)." if planned and last >= planned else " (stopped early)."
        if any("val_seconds" in m for m in metrics):
            clock = (f"{_duration(train_s + val_s)} (updates {_duration(train_s)}, validation {_duration(val_s)}; "
                     "sums of `seconds` and `val_seconds` in `metrics.jsonl`)")
        else:
            clock = f"{_duration(train_s)} of updates (sum of `seconds` in `metrics.jsonl`; validation time not logged)"
        out += [f"{stop} Meta-training wall clock: {clock}.", ""]
        table = val_table(metrics)
        if table:
            out += ["Validation accuracy (`metrics.jsonl`):", "", *table, ""]

    evals = sorted(p.parent for p in run.glob("eval-*/results.md"))
    if (run / "results.md").is_file():
        evals.insert(0, run)
    if evals:
        out += ["## Evaluation", ""]
        for folder in evals:
            if folder != run:
                out += [f"### {folder.name}", ""]
            out += [(folder / "results.md").read_text().rstrip(), ""]

    notes = run / "README.md"
    if notes.is_file() and not notes.read_text().startswith("---"):  # "---": a generated model card
        out += ["## Notes (the run's README.md)", "", notes.read_text().rstrip(), ""]
    extras = [p for p in sorted(run.iterdir()) if p.is_file() and p.name not in KNOWN
              and p.suffix in EXTRA_SUFFIXES and p.stat().st_size <= SMALL_FILE]
    for p in extras:
        out += [f"## {p.name}", "", f"```{EXTRA_SUFFIXES[p.suffix]}", p.read_text().rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "HEAD"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="finished run or evaluation folders")
    p.add_argument("--out", type=Path, default=Path("docs/runs"), help="where the records go (default docs/runs)")
    p.add_argument("--commit", default=None, help="the commit that holds the full folders (default: HEAD)")
    args = p.parse_args(argv)
    commit = args.commit or _head()
    names = [run.resolve().name for run in args.runs]
    if len(set(names)) != len(names):
        print(f"error: two run folders share a name: {sorted(n for n in names if names.count(n) > 1)}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        if not run.is_dir():
            print(f"error: not a run folder: {run}", file=sys.stderr)
            return 2
        path = args.out / f"{run.resolve().name}.md"
        path.write_text(record(run, commit))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
