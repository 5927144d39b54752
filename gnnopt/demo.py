"""``python -m gnnopt.demo``: a pretrained learned optimizer against Adam, offline, in minutes.

Trains the task-17 CNN (FashionMNIST, 14,378 parameters) on the small FashionMNIST subset
embedded in the package, once with a pretrained gnnopt rule and once with Adam at a good
learning rate, then prints loss and accuracy side by side and writes a plot. Every number
it prints is measured by this run; the embedded subset is small, so treat them as a demo,
not as a result (the README's results use the full data set).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from .bench.baselines import make_baseline
from .bench.data import load_dataset
from .bench.protocol import train_optimizee
from .bench.report import plot_curves, rule_labels
from .bench.tasks import get_task
from .hub import list_pretrained
from .optimizer import GNNOptimizer
from .rules import load_rule
from .runtime import check_device, keep_freed_memory

PREFERRED = "pna-fmnist17"


def default_rule() -> str | None:
    bundled = list_pretrained()
    return PREFERRED if PREFERRED in bundled else (bundled[0] if bundled else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gnnopt.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", default=None, help=f"bundled name, directory or Hub id (default: {PREFERRED})")
    p.add_argument("--steps", type=int, default=1000, help="training steps for each optimizer (default 1000)")
    p.add_argument("--adam-lr", type=float, default=1e-2, help="Adam's learning rate (1e-2 is tuned for task 17)")
    p.add_argument("--seed", type=int, default=101, help="the model's and the batches' seed (default 101)")
    p.add_argument("--record-every", type=int, default=50, metavar="N",
                   help="record loss and accuracy every N steps: the plot's points (default 50)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--plot", type=Path, default=Path("gnnopt-demo.png"),
                   help="where the plot goes (default gnnopt-demo.png)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.record_every < 1:
        print("error: --steps and --record-every must be positive", file=sys.stderr)
        return 2
    name = args.rule or default_rule()
    if name is None:
        print("error: no pretrained rule is bundled with this install; pass --rule DIR_OR_HUB_ID", file=sys.stderr)
        return 2
    try:
        device = check_device(args.device)
        rule = load_rule(name).to(device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    keep_freed_memory()
    task = get_task("fmnist17")
    data = load_dataset("fmnist", embedded=True, device=device)
    print(f"task 17 CNN ({task.num_params():,} parameters) on {data.source}; {args.steps} steps, batch 128")
    methods = {
        f"gnnopt {next(iter(rule_labels([name])))}": lambda m: GNNOptimizer(m.named_parameters(), rule),
        f"Adam lr {args.adam_lr:g}": lambda m: make_baseline("adam", m, args.adam_lr),
    }
    results, curves = {}, []
    for label, make in methods.items():
        with tqdm(total=args.steps, desc=label, unit="step") as bar:
            result = train_optimizee(task, data, make, steps=args.steps, seed=args.seed, split="test",
                                     record_every=args.record_every, progress=bar)
        results[label] = result
        curves += [{"task": "fmnist17 (embedded subset)", "method": label, "seed": args.seed, **r}
                   for r in result["curve"]]

    labels = list(results)
    print(f"\n| step | {' | '.join(f'{l}: train loss | {l}: test acc' for l in labels)} |")
    print("|---" * (1 + 2 * len(labels)) + "|")
    records = {label: {r["step"]: r for r in results[label]["curve"]} for label in labels}
    steps = sorted(records[labels[0]])
    shown = [s for s in steps if s in (steps[0], steps[-1]) or s % max(args.steps // 5, 1) == 0]
    for s in shown:
        cells = [f"{records[l][s]['train_loss']:.3f} | {100 * records[l][s]['accuracy']:.1f}%"
                 if s in records[l] else "- | -" for l in labels]
        print(f"| {s} | {' | '.join(cells)} |")
    try:
        plot_curves(curves, args.plot)
        print(f"\nplot: {args.plot}")
    except ImportError as err:
        print(f"\n(no plot: {err})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
