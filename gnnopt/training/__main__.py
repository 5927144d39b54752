"""``python -m gnnopt.training``: meta-train a learned update rule, or reproduce a shipped one.

    python -m gnnopt.training --task fmnist17 --rule pna --outer-steps 1000 --out runs/pna
    python -m gnnopt.training --out runs/pna --resume                # continue a stopped run
    python -m gnnopt.training --out runs/pna --resume --outer-steps 2000   # or extend it
    python -m gnnopt.training recipe pna-fmnist17 [--dry-run]        # every stage of a checkpoint
    python -m gnnopt.training card pna-fmnist17                      # regenerate its model card
    torchrun --nproc-per-node 2 -m gnnopt.training ...               # episodes split over processes

The training flags are generated from :class:`~gnnopt.training.config.TrainConfig`: its
fields, their groups, help and defaults are the one source of truth.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import torch

from ..bench.tasks import list_tasks
from ..runtime import check_device, keep_freed_memory
from .config import GROUPS, RESUMABLE, TrainConfig


def _field_type(hint: Any) -> type:
    """``int`` of ``int | None``, and so on."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.get_origin(hint) or hint


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, grouped as the fields are. Flags not given are
    absent from the parsed namespace (``argparse.SUPPRESS``), so a resumed run can tell them
    from its stored values."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {name: parser.add_argument_group(f"{name} options") for name in GROUPS}
    for f in dataclasses.fields(TrainConfig):
        kind = _field_type(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        text = f.metadata["help"]
        if f.name == "task":
            text += f"; tasks: {', '.join(list_tasks())}"
        text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        flag = "--" + f.name.replace("_", "-")
        group = groups[f.metadata["group"]]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, type=json.loads if kind is dict else kind, default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=text)
    rule = groups["rule"]
    rule.add_argument("--hidden", type=int, default=argparse.SUPPRESS, help="shortcut for rule_config's hidden")
    rule.add_argument("--layers", type=int, default=argparse.SUPPRESS, help="shortcut for rule_config's layers")


def config_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` options given on the command line (and only those)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    if "rule" in given:
        given["rule"] = given["rule"].replace("-", "_")
    for key in ("hidden", "layers"):
        if key in vars(args):
            given["rule_config"] = {**given.get("rule_config", {}), key: getattr(args, key)}
    return given


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gnnopt.training", description=__doc__.split("\n\n")[0],
        epilog="Also: `python -m gnnopt.training recipe NAME [--dry-run]` reproduces a shipped checkpoint "
               "stage by stage; `python -m gnnopt.training card NAME` regenerates its model card.")
    add_config_arguments(p)
    run = p.add_argument_group("this invocation (not stored with the run)")
    run.add_argument("--out", type=Path, required=True, help="run directory")
    run.add_argument("--resume", action="store_true",
                     help=f"continue the run in --out with its stored options; of the others, only "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} may change")
    run.add_argument("--device", default="cpu")
    run.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    run.add_argument("--data-dir", default=None)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--pipeline", choices=["auto", "on", "off"], default="auto",
                     help="on a multi-core CPU, run each inner step's backward beside the next forward "
                          "(auto: where the rule gains from it, i.e. pna)")
    run.add_argument("--recompute", action="store_true",
                     help="tbptt: run the rule's forward again in the backward instead of storing its "
                          "activations (much less memory for long unrolls)")
    return p


def resumed_config(out: Path, given: dict[str, Any]) -> TrainConfig:
    """The stored config of the run in ``out``, with the :data:`RESUMABLE` options ``given``
    changed; any other option given must equal its stored value."""
    from .checkpoint import read_config

    stored = TrainConfig.normalize(read_config(out))
    clashes = {k: (stored[k], v) for k, v in given.items() if k not in RESUMABLE and stored[k] != v}
    if clashes:
        listed = ", ".join(f"{k} (stored {a!r}, given {b!r})" for k, (a, b) in clashes.items())
        raise ValueError(f"--resume cannot change {listed}; only {', '.join(RESUMABLE)} may change")
    return TrainConfig.from_dict({**stored, **given})


def train_main(argv: list[str]) -> int:
    from .trainer import meta_train, summary

    args = build_parser().parse_args(argv)
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        check_device(args.device)
        given = config_options(args)
        cfg = resumed_config(args.out, given) if args.resume else TrainConfig(**given)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.resume:
        changed = ", ".join(f"{k}={v!r}" for k, v in given.items() if k in RESUMABLE)
        print(f"resuming {args.out} with its stored options" + (f", now {changed}" if changed else ""),
              file=sys.stderr)
    if args.recompute and cfg.objective != "tbptt":
        print("error: --recompute is for --objective tbptt (greedy keeps one step's activations only)",
              file=sys.stderr)
        return 2
    try:
        meta_train(cfg, args.out, resume=args.resume, device=args.device, data_dir=args.data_dir,
                   progress=not args.no_progress, pipeline={"auto": None, "on": True, "off": False}[args.pipeline],
                   recompute=args.recompute)
    except KeyboardInterrupt:
        return 130
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary(args.out)}; best rule in {args.out / 'best'}")
    return 0


def recipe_main(argv: list[str]) -> int:
    """``recipe`` and ``card``: a shipped checkpoint's stages, and its model card."""
    from .card import write_card
    from .recipe import SMOKE, Recipe, run

    p = argparse.ArgumentParser(prog="python -m gnnopt.training",
                                description="Reproduce a shipped checkpoint (recipe) or write its model card (card).")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("recipe", help="run (or resume) every stage of a recipe")
    r.add_argument("name", help="a recipe under recipes/ (e.g. pna-fmnist17) or a recipe.json path")
    r.add_argument("--dry-run", action="store_true", help="print every stage, its command and status; run nothing")
    r.add_argument("--runs", type=Path, default=Path("runs"), help="where stage runs live (default: runs)")
    r.add_argument("--stages", default=None, help="comma-separated stage names to run (default: all, in order)")
    r.add_argument("--smoke", action="store_true",
                   help=f"tiny stages on the embedded subset, to check the plumbing ({SMOKE})")
    r.add_argument("--record", action="store_true", help="copy each finished stage's record into the recipe folder")
    r.add_argument("--evaluate", action="store_true", help="then run the recipe's evaluations into its folder")
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=None, help="torch threads (default: the recipe's)")
    r.add_argument("--no-progress", action="store_true")
    c = sub.add_parser("card", help="write a recipe's model card (and with --ship its weights) into pretrained/")
    c.add_argument("name")
    c.add_argument("--runs", type=Path, default=Path("runs"))
    c.add_argument("--ship", action="store_true", help="also copy the shipped stage's selected weights from RUNS")
    c.add_argument("--dest", type=Path, default=Path("pretrained"))
    args = p.parse_args(argv)
    try:
        recipe = Recipe.load(args.name, args.runs)
        if args.command == "card":
            print(f"wrote {write_card(recipe, args.dest, runs=args.runs if args.ship else None)}")
            return 0
        check_device(args.device)
        keep_freed_memory()
        threads = args.threads or recipe.threads
        if threads:
            torch.set_num_threads(threads)
        only = [s.strip() for s in args.stages.split(",")] if args.stages else None
        return run(recipe, args.runs, dry_run=args.dry_run, smoke=args.smoke, only=only, do_record=args.record,
                   evaluate=args.evaluate, device=args.device, progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("recipe", "card"):
        return recipe_main(argv)
    return train_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
