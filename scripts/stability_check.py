"""Stability of evaluated runs (issue "Tuning-free", criterion 5): read the ``curves.csv`` of
``python -m gnnopt.eval`` folders and report, per task and method, the runs whose training loss
turned non-finite and the lowest test accuracy recorded after a given step.

    python scripts/stability_check.py recipes/pna-fmnist17/evals/stability-d1 --after 200 --floor 0.2

Prints a Markdown table; exits 1 when a run diverged or fell below ``--floor`` (0 otherwise).
The runs must have been recorded often enough to show a dip (``--record-every 200`` or finer).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path


def check(folders: list[Path], *, after: int, floor: float) -> tuple[list[dict], bool]:
    """One row per (task, method): seeds, diverged seeds, the lowest accuracy recorded after
    step ``after`` and where; and whether every run passed."""
    runs: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for folder in folders:
        path = folder / "curves.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {folder} an evaluation folder?")
        with open(path, newline="") as f:
            for record in csv.DictReader(f):
                runs[record["task"], record["method"]][int(record["seed"])].append(record)
    rows, ok = [], True
    for (task, method), seeds in runs.items():
        diverged = sorted(s for s, recs in seeds.items()
                          if any(not math.isfinite(float(r["train_loss"])) for r in recs))
        late = [(float(r["accuracy"]), s, int(r["step"])) for s, recs in seeds.items() for r in recs
                if int(r["step"]) > after]
        lowest = min(late) if late else None
        passed = not diverged and lowest is not None and lowest[0] >= floor
        ok &= passed
        rows.append({"task": task, "method": method, "seeds": sorted(seeds), "diverged": diverged,
                     "steps": max(int(r["step"]) for recs in seeds.values() for r in recs),
                     "lowest": lowest, "passed": passed})
    return rows, ok


def seed_ranges(seeds: list[int]) -> str:
    """Sorted seeds as runs of consecutive ones, the way ``--seeds`` takes them: ``101-103, 106``."""
    runs: list[list[int]] = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="evaluation output folders (--out of gnnopt.eval)")
    p.add_argument("--after", type=int, default=200, help="only records after this step count")
    p.add_argument("--floor", type=float, default=0.2, help="the lowest acceptable test accuracy (0-1)")
    args = p.parse_args(argv)
    try:
        rows, ok = check(args.folders, after=args.after, floor=args.floor)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"| task | method | seeds | steps | diverged | lowest test accuracy after step {args.after} (%) "
          f"| at or above {100 * args.floor:g}% |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        seeds = f"{seed_ranges(r['seeds'])} ({len(r['seeds'])})"
        lowest = "no record" if r["lowest"] is None else \
            f"{100 * r['lowest'][0]:.2f} (seed {r['lowest'][1]}, step {r['lowest'][2]})"
        print(f"| {r['task']} | {r['method']} | {seeds} | {r['steps']} | {len(r['diverged'])} | {lowest} | "
              f"{'yes' if r['passed'] else 'NO'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
