"""The README's tuning-free table and docs/RESULTS.md's generalization table, with their plots,
assembled from the evaluations' output folders.

Every cell is read from a ``results.json`` that ``fmnist_generalization.py`` (or
``python -m gnnopt.eval``) wrote; nothing is typed by hand. A column names, per network,
the folder and the method label that hold its row, because the folders were measured at
different times: ``pna-fmnist17`` means whichever rule was bundled then (``COLUMNS`` below
says which is which).
A network whose folder or row is missing shows "not measured".

    python examples/generalization_table.py                     # results/tuning-free/summary.{md,png}
    python examples/generalization_table.py --table generalization   # results/fmnist-generalization/summary.*
    python examples/generalization_table.py --root /tmp/sweeps --out /tmp/summary

The Markdown goes to ``OUT.md`` (and stdout), the plot (when matplotlib is installed) to
``OUT.png``: test accuracy against width and against depth, one line per column, with the
seeds' standard deviation as error bars.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path

from gnnopt.bench.tasks import get_task

#: the networks of the table, in its order: (row label, task name, sweep axis, axis value)
NETWORKS: tuple[tuple[str, str, str, int], ...] = (
    ("w8", "fmnist17-w8", "width", 8),
    ("w16 = task 17", "fmnist17", "width", 16),
    ("w32 = d3", "fmnist17-w32", "width", 32),
    ("w64", "fmnist17-w64", "width", 64),
    ("w128", "fmnist17-w128", "width", 128),
    ("d1", "fmnist17-d1", "depth", 1),
    ("d2", "fmnist17-d2", "depth", 2),
    ("d4", "fmnist17-d4", "depth", 4),
    ("d5", "fmnist17-d5", "depth", 5),
)

#: task names that are the same network (w16 is task 17; d3 is w32)
ALIASES = {"fmnist17-w16": "fmnist17", "fmnist17-d3": "fmnist17-w32"}


@dataclass(frozen=True)
class Column:
    """One column: where its rows are. ``sources`` are ``(folder, method)`` pairs, the folder
    relative to the root (or the repository), the method as the results name it (a row
    matches it exactly or as ``method (...)``, e.g. ``adam (lr 0.01)``)."""

    label: str
    sources: tuple[tuple[str, str], ...]
    bold_if_beats: str | None = None  # the label of the column to beat (bold when a cell does)


_GEN = "results/fmnist-generalization"
_TASK17 = "results/fmnist17"  # task 17's evaluations, copied from the run folders (at a2a8660) that held them
_BUNDLED = "pna-fmnist17"  # the bundled rule's label: stage 3 in d4, w64 and tuned-* (stage 1 in the first sweeps)
_STAGE3 = "pna-multi-fmnist17/best"
_STAGE4 = "pna-unroll100/best"

#: the README's columns. Stage 4 is the bundled ``pna-fmnist17`` since session 5, stage 3
#: was before it (its rows labelled ``pna-fmnist17`` in d4, w64 and the ``tuned-*`` folders),
#: stage 1 before that (its rows, labelled ``pna-fmnist17`` in w8, w16, w32, d1 and d2, are
#: no longer a column: stages 3 and 4 supersede it).
COLUMNS: tuple[Column, ...] = (
    Column("`pna-fmnist17` (bundled: stage 4)", (
        (f"{_TASK17}/pna-unroll100-eval-1000", _STAGE4), (f"{_GEN}/u100-w8-d1-d2", _STAGE4),
        (f"{_GEN}/u100-w32", _STAGE4), *((f"{_GEN}/u100-{net}", _STAGE4) for net in ("w64", "d4", "d5")),
        (f"{_GEN}/w128", _STAGE4),  # with Adam: --rule training/experiments/pna-unroll100/best
    ), bold_if_beats="tuned Adam"),
    Column("stage 4, multiplier tuned", (
        (f"{_GEN}/u100-tuned-w8-d1", _STAGE4),
        *((f"{_GEN}/u100-tuned-{net}", _STAGE4) for net in ("w16", "w32", "w64", "w128", "d2", "d4", "d5")),
    ), bold_if_beats="tuned Adam"),
    Column("stage 3", (
        (f"{_TASK17}/pna-multi-fmnist17-eval-1000", _STAGE3), (f"{_GEN}/multi-w8-d1-d2", _STAGE3),
        (f"{_GEN}/multi-w32", _STAGE3), (f"{_GEN}/d4", _BUNDLED), (f"{_GEN}/w64", _BUNDLED),
        (f"{_GEN}/d5", _STAGE3),  # resumed with --rule training/pna-multi-fmnist17/best
    ), bold_if_beats="tuned Adam"),
    Column("stage 3, multiplier tuned", tuple(
        (f"{_GEN}/tuned-{net}", _BUNDLED) for net in ("w8", "w16", "w32", "w64", "w128", "d1", "d2", "d4", "d5")
    ), bold_if_beats="tuned Adam"),
    Column("tuned Adam", tuple(
        (f"{_GEN}/{net}", "adam") for net in ("w8", "w16", "w32", "w64", "w128", "d1", "d2", "d4", "d5")
    )),
)


_SHIPPED = "recipes/pna-fmnist17/evals"  # the shipped rule's evaluations (its recipe's)

#: the README's columns: the shipped rule at its defaults (nothing tuned: the lean rule
#: distilled from stage 4, its recipe's stage ``tiny``, with the fan-in and depth factors and
#: since session 17 the nominal Adam term, ``nominal_blend`` 0.5: its ``nominal-*`` evaluations),
#: tuned Adam, the tuning-free optimizers at their defaults, and the previous checkpoint (the
#: same weights without the nominal term: the ``tiny-*`` evaluations, session 16).
TUNING_FREE_COLUMNS: tuple[Column, ...] = (
    Column("`pna-fmnist17` (defaults)", tuple(
        (f"{_SHIPPED}/{folder}", "pna-fmnist17")
        for folder in ("nominal-1000", "nominal-w32", "nominal-d5", "nominal-w64", "nominal-w128")
    ), bold_if_beats="tuned Adam"),
    COLUMNS[-1],
    *(Column(label, tuple((folder, method) for folder in
                          ("results/tuning-free", "results/tuning-free-rest", "results/tuning-free-large",
                           "results/tuning-free-w128")))
      for label, method in (("Prodigy (defaults)", "prodigy"), ("Schedule-Free AdamW (defaults)", "schedulefree"))),
    Column("previous checkpoint (no nominal term)", tuple(
        (f"{_SHIPPED}/{folder}", "pna-fmnist17") for folder in ("tiny-1000", "tiny-w32", "tiny-d5", "tiny-w64")
    ), bold_if_beats="tuned Adam"),
)

#: the tables this script writes: their columns and where their outputs go by default
TABLES: dict[str, tuple[tuple[Column, ...], str]] = {
    "tuning-free": (TUNING_FREE_COLUMNS, "results/tuning-free/summary"),
    "generalization": (COLUMNS, f"{_GEN}/summary"),
}


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    seeds: int
    lr: float | None
    grid: tuple[float, ...]  # the tuning grid the lr was picked from (empty: not tuned)
    folder: str
    command: str
    note: str = ""  # e.g. "embedded FashionMNIST subset: not a result" (smoke runs)

    @property
    def at_grid_edge(self) -> bool:
        return bool(self.grid) and self.lr is not None and (self.lr >= max(self.grid) or self.lr <= min(self.grid))


def _matches(method: str, wanted: str) -> bool:
    return method == wanted or method.startswith(wanted + " (")


def collect(columns: Sequence[Column], root: Path) -> dict[str, dict[str, Cell]]:
    """``{column label: {task: Cell}}`` from the ``results.json`` files under ``root``."""
    table: dict[str, dict[str, Cell]] = {}
    for column in columns:
        cells = table.setdefault(column.label, {})
        for folder, method in column.sources:
            path = root / folder / "results.json"
            if not path.is_file():
                continue
            results = json.loads(path.read_text())
            for row in results.get("rows", []):
                if not _matches(row["method"], method):
                    continue
                task = ALIASES.get(row["task"], row["task"])
                if task in cells:
                    raise ValueError(f"{column.label!r}: two rows for {task} ({cells[task].folder} and {folder})")
                grid = tuple(float(k) for k in row.get("tuning_val_acc", {}))
                cells[task] = Cell(100 * row["mean"], 100 * row["std"], len(row["seeds"]), row.get("lr"), grid,
                                   folder, results.get("command", ""), row.get("note", ""))
    return table


def _param_count(task: str) -> int:
    return sum(p.numel() for p in get_task(task).build_model().parameters())


def _lr_note(label: str, cell: Cell) -> str:
    if not cell.grid:
        return ""
    dagger = " †" if cell.at_grid_edge else ""
    if label == "tuned Adam":
        return f" (lr {cell.lr:.0e}{dagger})".replace("e-0", "e-")
    return f" (×{cell.lr:g}{dagger})"


def markdown(columns: Sequence[Column], table: Mapping[str, Mapping[str, Cell]], name: str = "generalization") -> str:
    """The table, the † note and the commands that produced its cells."""
    header = "| network (parameters) | " + " | ".join(f"{c.label} (%)" for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    edge = False
    for label, task, _, _ in NETWORKS:
        cells = []
        for column in columns:
            cell = table[column.label].get(task)
            if cell is None:
                cells.append("not measured")
                continue
            text = f"{cell.mean:.2f} ± {cell.std:.2f}"
            rival = table.get(column.bold_if_beats or "", {}).get(task)
            if rival is not None and cell.mean > rival.mean:
                text = f"**{text}**"
            edge |= cell.at_grid_edge
            cells.append(text + _lr_note(column.label, cell) + ("" if cell.seeds == 5 else f" ({cell.seeds} seeds)"))
        lines.append(f"| {label} ({_param_count(task):,}) | " + " | ".join(cells) + " |")
    lines.append("")
    notes = sorted({cell.note for cells in table.values() for cell in cells.values() if cell.note})
    if notes:
        lines[:0] = [f"> **{note.upper()}**" for note in notes] + [""]
    if edge:
        lines.append("† at the edge of the tuning grid: the best value may lie beyond it.")
    lines.append("Bold: above tuned Adam. Mean ± std (population) over the seeds of the final test accuracy.")
    lines.append("")
    flag = "" if name == "tuning-free" else f" --table {name}"
    lines.append(f"Produced by `python examples/generalization_table.py{flag}` from these runs:")
    commands = sorted({cell.command for cells in table.values() for cell in cells.values() if cell.command})
    lines.extend(f"- `{command}`" for command in commands)
    return "\n".join(lines) + "\n"


def plot(columns: Sequence[Column], table: Mapping[str, Mapping[str, Cell]], path: Path) -> bool:
    """Accuracy against width and against depth, one line per column, and below (when there
    is a tuned Adam column) each column's margin over tuned Adam. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    baseline = next((c.label for c in columns if c.label == "tuned Adam"), None)
    fig, axes = plt.subplots(2 if baseline else 1, 2, figsize=(11, 8 if baseline else 4.2), sharey="row",
                             squeeze=False)
    for col, axis in enumerate(("width", "depth")):
        nets = [(task, value) for _, task, kind, value in NETWORKS if kind == axis]
        if axis == "depth":  # d3 is w32
            nets.insert(2, ("fmnist17-w32", 3))
        for row, margin in enumerate((False, True) if baseline else (False,)):
            ax = axes[row][col]
            for column in columns:
                cells = table[column.label]
                ref = table[baseline] if margin else {}
                points = [(value, cells[task], ref[task].mean if margin else 0.0) for task, value in nets
                          if task in cells and (not margin or task in ref)]
                if not points:
                    continue
                xs, picked, offsets = zip(*points)
                ax.errorbar(xs, [c.mean - o for c, o in zip(picked, offsets)], yerr=[c.std for c in picked],
                            marker="o", capsize=3, label=column.label.replace("`", ""),
                            linestyle="-" if len(xs) > 1 else "none")
            ax.set_xlabel("first-layer width h (layers h-2h-2h)" if axis == "width" else "conv layers")
            if axis == "width":
                ax.set_xscale("log", base=2)
                ax.set_xticks([8, 16, 32, 64, 128], ["8", "16", "32", "64", "128"])
            else:
                ax.set_xticks([1, 2, 3, 4, 5])
            ax.grid(alpha=0.3)
            if margin:
                ax.axhline(0.0, color="black", linewidth=0.8)
            else:
                ax.set_title(f"FashionMNIST CNN, {axis} sweep (1,000 steps)")
        axes[0][0].set_ylabel("test accuracy (%)")
        if baseline:
            axes[1][0].set_ylabel("test accuracy − tuned Adam's (points)")
    axes[0][1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", choices=sorted(TABLES), default="tuning-free",
                   help="tuning-free: the README's (default); generalization: docs/RESULTS.md's")
    p.add_argument("--root", type=Path, default=Path("."), help="the repository root the folders are relative to")
    p.add_argument("--out", type=Path, default=None, help="writes OUT.md and OUT.png (default: the table's own)")
    args = p.parse_args(argv)
    columns, default_out = TABLES[args.table]
    args.out = args.out or Path(default_out)
    table = collect(columns, args.root)
    if not any(table.values()):
        print(f"error: no results.json under {args.root} for any column (run the sweeps first)")
        return 2
    text = markdown(columns, table, args.table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    wrote = [str(args.out.with_suffix(".md"))]
    if plot(columns, table, args.out.with_suffix(".png")):
        wrote.append(str(args.out.with_suffix(".png")))
    print("wrote " + ", ".join(wrote))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
