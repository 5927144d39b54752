"""Reports of an evaluation: the Markdown table, ``results.json``, ``curves.csv`` and a plot."""
from __future__ import annotations

import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def rule_labels(names: Sequence[str]) -> dict[str, str]:
    """Short labels for rule names (``runs/pna/best`` -> ``pna/best``) unless two would clash."""
    short = [_label(n) for n in names]
    return dict(zip(short if len(set(short)) == len(short) else names, names))


def _label(name: str) -> str:
    path = Path(name)
    return path.parent.name + "/" + path.name if path.name == "best" else path.name


def accuracy_at(rows: list[dict[str, Any]], curves: list[dict[str, Any]], steps: Sequence[int]) -> list[dict[str, Any]]:
    """Rows with ``at``: ``{step: {"mean", "std", "test_acc"}}`` of the test accuracy the curves
    recorded at each of ``steps`` (e.g. after 1,000 steps of a 5,000-step run)."""
    out = []
    for row in rows:
        at = {}
        for step in steps:
            accs = [c["accuracy"] for c in curves
                    if c["task"] == row["task"] and c["method"] == row["method"] and c["step"] == step]
            if accs:
                at[step] = {"mean": statistics.fmean(accs), "std": statistics.pstdev(accs), "test_acc": accs}
        out.append({**row, "at": at} if at else row)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    extra = sorted({step for r in rows for step in r.get("at", {})})
    head = "".join(f" after {step} steps (%) |" for step in extra)
    lines = [f"| task | method |{head} test accuracy (%) | seeds | steps |", "|---|---|" + "---|" * (len(extra) + 3)]
    for r in rows:
        cells = "".join(f" {100 * r['at'][s]['mean']:.2f} ± {100 * r['at'][s]['std']:.2f} |" if s in r.get("at", {})
                        else " - |" for s in extra)
        lines.append(f"| {r['task']} | {r['method']} |{cells} {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
                     f"{len(r['seeds'])} | {r['steps']} |")
    return "\n".join(lines)


def write_outputs(out: Path, rows, curves, command: str, note: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted({r["data"] for r in rows})
    banner = f"> **{note}**\n\n" if note else ""
    (out / "results.md").write_text(
        f"{banner}{format_table(rows)}\n\nMean ± std (population) of the final test accuracy. Data: {'; '.join(sources)}.\n"
        f"Command: `{command}`\n")
    (out / "results.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "method", "seed", "step", "train_loss", "loss", "accuracy"])
        writer.writeheader()
        writer.writerows(curves)
    try:
        plot_curves(curves, out / "curves.png")
    except ImportError as err:
        print(f"note: {err}", file=sys.stderr)


def plot_curves(curves: list[dict[str, Any]], path: Path) -> None:
    """Mean test accuracy and train loss against steps, one line per method, per task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need: pip install gnnopt[plot]") from err
    tasks = sorted({c["task"] for c in curves})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for method in dict.fromkeys(c["method"] for c in curves if c["task"] == task):
            points: dict[int, list[tuple[float, float]]] = {}
            for c in curves:
                if c["task"] == task and c["method"] == method:
                    points.setdefault(c["step"], []).append((c["accuracy"], c["train_loss"]))
            steps = sorted(points)
            row[0].plot(steps, [100 * statistics.fmean(a for a, _ in points[s]) for s in steps], label=method)
            row[1].plot(steps, [statistics.fmean(t for _, t in points[s]) for s in steps], label=method)
        row[0].set(title=f"{task}: test accuracy", xlabel="step", ylabel="test accuracy (%)")
        row[1].set(title=f"{task}: train loss", xlabel="step", ylabel="train loss (mean since last point)",
                   yscale="log")
        row[0].legend()
        row[0].grid(alpha=0.3)
        row[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
