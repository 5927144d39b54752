"""``python -m gnnopt.training``: meta-train a learned update rule.

    python -m gnnopt.training --task fmnist17 --rule pna --outer-steps 1000 --out runs/pna
    python -m gnnopt.training --out runs/pna --resume          # continue a stopped run
    torchrun --nproc-per-node 2 -m gnnopt.training ...         # episodes split over processes
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..runtime import keep_freed_memory
from .config import OBJECTIVES, TrainConfig
from .trainer import meta_train, summary


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m gnnopt.training", description="Meta-train a learned update rule.")
    p.add_argument("--task", default=d.task,
                   help="a task, or several comma-separated ones on one data set (each episode draws one; "
                   "selection averages their validation accuracies)")
    p.add_argument("--rule", default=d.rule, help="ff, lstm, pna, rt or pna_lstm")
    p.add_argument("--hidden", type=int, default=None, help="rule hidden size (default: paper configuration)")
    p.add_argument("--layers", type=int, default=None, help="rule layers (default: paper configuration)")
    p.add_argument("--rule-config", type=json.loads, default=None,
                   help='other rule options as JSON, e.g. \'{"head_layers": 3}\'')
    p.add_argument("--objective", choices=OBJECTIVES, default=d.objective)
    p.add_argument("--unroll", type=int, default=d.unroll, help="tbptt truncation length")
    p.add_argument("--second-order", action="store_true",
                   help="tbptt: back-propagate through the optimizee's gradients too (create_graph)")
    p.add_argument("--es-pairs", type=int, default=d.es_pairs,
                   help="es: antithetic pairs of perturbations per segment")
    p.add_argument("--es-sigma", type=float, default=d.es_sigma, help="es: perturbation scale")
    p.add_argument("--es-tail", type=int, default=d.es_tail, metavar="K",
                   help="es: the meta-loss is the mean loss of each run's last K steps (default: all)")
    p.add_argument("--inner-steps", type=int, default=d.inner_steps)
    p.add_argument("--outer-steps", type=int, default=d.outer_steps)
    p.add_argument("--meta-batch-size", type=int, default=d.meta_batch_size)
    p.add_argument("--segment-steps", type=int, default=None,
                   help="inner steps per outer step; longer episodes carry over to the next outer steps")
    p.add_argument("--random-inner-steps-after", type=int, default=None)
    p.add_argument("--random-inner-steps-min", type=float, default=d.random_inner_steps_min)
    p.add_argument("--random-inner-steps-max", type=float, default=d.random_inner_steps_max)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--clip", type=float, default=d.clip, help="meta-gradient norm clip (0: off)")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-steps", type=int, default=None, help="validation episode length (default: inner steps)")
    p.add_argument("--eval-seeds", type=int, default=d.eval_seeds,
                   help="validation episodes averaged for model selection")
    p.add_argument("--init", default=None, metavar="NAME_OR_DIR",
                   help="start from a saved rule of the same kind (fine-tuning); options not given take its values")
    p.add_argument("--init-head", default=None, metavar="NAME_OR_DIR",
                   help="start the rule's head from a saved rule's head (e.g. a trained ff), graph inputs at zero")
    p.add_argument("--train-only", default=None, metavar="MODULES",
                   help="meta-train only the rule's parameters under these comma-separated module names "
                        "(e.g. step_head); the rest keeps its initial values")
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--embedded", action="store_true", help="train on the small embedded FashionMNIST subset")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its stored options")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--pipeline", choices=["auto", "on", "off"], default="auto",
                   help="on a multi-core CPU, run each inner step's backward beside the next forward "
                        "(auto: where the rule gains from it, i.e. pna)")
    p.add_argument("--recompute", action="store_true",
                   help="tbptt: run the rule's forward again in the backward instead of storing its activations "
                        "(much less memory for long unrolls, about one more rule forward per step; not stored, "
                        "so pass it again with --resume)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    rule_config = dict(args.rule_config or {})
    if args.hidden is not None:
        rule_config["hidden"] = args.hidden
    if args.layers is not None:
        rule_config["layers"] = args.layers
    return TrainConfig(
        task=args.task, rule=args.rule.replace("-", "_"), rule_config=rule_config, objective=args.objective,
        unroll=args.unroll, second_order=args.second_order, inner_steps=args.inner_steps,
        outer_steps=args.outer_steps,
        meta_batch_size=args.meta_batch_size, random_inner_steps_after=args.random_inner_steps_after,
        random_inner_steps_min=args.random_inner_steps_min, random_inner_steps_max=args.random_inner_steps_max,
        lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, clip=args.clip,
        eval_every=args.eval_every, eval_steps=args.eval_steps, eval_seeds=args.eval_seeds,
        save_every=args.save_every, seed=args.seed,
        embedded=args.embedded, init=args.init, init_head=args.init_head, segment_steps=args.segment_steps,
        train_only=args.train_only, es_pairs=args.es_pairs, es_sigma=args.es_sigma,
        es_tail=args.es_tail,
    )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        from .checkpoint import read_config

        cfg = TrainConfig.from_dict(read_config(args.out))
        print(f"resuming {args.out} with its stored options", file=sys.stderr)
    else:
        try:
            cfg = config_from_args(args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
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


if __name__ == "__main__":
    raise SystemExit(main())
