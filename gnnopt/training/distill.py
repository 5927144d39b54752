"""Distillation: a cheaper rule learns to write what a trained rule writes.

Meta-training a graph rule from scratch is out of reach on two cores (``docs/EXPERIMENTS.md``,
``pna-scratch-tbptt-200``); regressing a new architecture onto an existing rule's outputs is
supervised learning, with no unrolled optimizee, and takes minutes. Two commands:

    python -m gnnopt.training.distill collect --teacher runs/teacher --tasks fmnist17,fmnist17-d1 --out runs/distill-data
    python -m gnnopt.training.distill train --teacher runs/teacher --data runs/distill-data \\
        --rule pna --rule-config '{"edge_hidden": 8, "message_hidden": 16, "head_hidden": 16}' --out runs/pna-lean

``collect`` trains each task's model with the teacher as it is used (``GNNOptimizer``, graph
every ``K``) and keeps, for sampled windows of ``K`` steps, the optimizer's inputs at the
window's graph step and at one step inside it (parameters, gradients and updated momenta).
``train`` fits the student so that, reading its context from the graph step and its features
from the later step, its update matches the teacher's on the same pair (the amortized step, as
the student will be used), scored per tensor relative to the teacher's update size.

A stateful student (``pna_lstm``) needs its own recurrent state as it would have it, so its data
are collected in runs of consecutive windows (``collect --segments N``): it is trained over each
run in order, carrying its state from one graph step to the next, and scored after the first
:data:`BURN_IN` windows of the run (its state starts at zero there, mid-trajectory).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from ..bench.data import BatchStream, Dataset, load_dataset
from ..bench.tasks import get_task
from ..features import BETAS, element_features, update_momenta
from ..graph import build_neural_graph, infer_kinds
from ..optimizer import GNNOptimizer
from ..rules import create
from ..rules.base import UPDATE_FORM_DEFAULTS, RuleState, UpdateRule


#: the teacher's update multiplier on trajectory ``seed`` (cycled): states off its own path too
LR_CYCLE = (1.0, 0.5, 2.0, 1.0, 0.7, 1.4)

#: windows at the start of each run that a stateful student reads but is not scored on
BURN_IN = 3


def _raw_inputs(optimizer: GNNOptimizer) -> Tensor:
    """What the optimizer's next step reads: ``[2 + len(BETAS), P]`` = theta, grad, new momenta."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    theta = torch.cat([p.detach().reshape(-1).float() for p in params])
    grad = torch.cat([p.grad.reshape(-1).float() for p in params])
    old = torch.cat([optimizer.state[p]["momenta"].reshape(len(BETAS), -1) if optimizer.state[p]
                     else torch.zeros(len(BETAS), p.numel()) for p in params], dim=1)
    new = update_momenta(old, grad, torch.tensor(BETAS))
    return torch.cat([theta[None], grad[None], new])


def collect(teacher: UpdateRule, task_name: str, data: Dataset, *, steps: int, seed: int, lr: float, windows: int,
            graph_every: int, out: Path, segments: int = 0) -> None:
    """One trajectory of ``task_name`` under the teacher (update multiplier ``lr``);
    ``windows`` windows of ``graph_every`` steps, drawn at random (with ``segments``, as that
    many runs of consecutive windows), saved to ``out``."""
    task = get_task(task_name)
    torch.manual_seed(seed)
    model = task.build_model()
    optimizer = GNNOptimizer(model, teacher, lr=lr, graph_every=graph_every)
    stream = BatchStream(data.train, task.batch_size, torch.Generator().manual_seed(seed))
    rng = random.Random(seed)
    count = steps // graph_every
    if segments:
        length = max(1, windows // segments)
        starts = rng.sample(range(0, count - length + 1, length), min(segments, count // length))
        chosen = {start + i for start in starts for i in range(length)}
    else:
        chosen = set(rng.sample(range(count), min(windows, count)))
    offsets = {w: rng.randrange(graph_every) for w in chosen}
    pairs, anchor = [], None
    for step in range(steps):
        x, y = stream.next()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        window, offset = divmod(step, graph_every)
        if window in chosen and offset == 0:
            anchor = _raw_inputs(optimizer)
        if window in chosen and offset == offsets[window]:
            pairs.append({"step": step, "window": window, "anchor": anchor, "later": _raw_inputs(optimizer)})
        optimizer.step()
    names = [n for n, _ in model.named_parameters()]
    torch.save({"task": task_name, "seed": seed, "lr": lr, "graph_every": graph_every, "segments": segments,
                "names": names,
                "shapes": [tuple(p.shape) for p in model.parameters()], "kinds": infer_kinds(model),
                "pairs": pairs}, out)


def main_collect(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    teacher = UpdateRule.from_pretrained(args.teacher)
    graph_every = args.graph_every or teacher.config["graph_every"]
    args.out.mkdir(parents=True, exist_ok=True)
    for task_name in args.tasks.split(","):
        data = load_dataset(get_task(task_name).dataset, embedded=args.embedded)
        for seed in range(1, args.trajectories + 1):
            path = args.out / f"{task_name}-s{seed}.pt"
            if path.exists():
                continue
            start = time.time()
            partial = path.with_suffix(".partial")
            collect(teacher, task_name, data, steps=args.steps, seed=seed, lr=LR_CYCLE[(seed - 1) % len(LR_CYCLE)],
                    windows=args.windows, graph_every=graph_every, out=partial, segments=args.segments)
            partial.rename(path)  # a file under its final name is complete
            print(f"{path.name}: {time.time() - start:.0f} s", flush=True)


class _Pairs:
    """The collected pairs with the teacher's update on each (computed once, on load)."""

    def __init__(self, files: list[Path], teacher: UpdateRule, student: UpdateRule) -> None:
        self.items: list[dict[str, Any]] = []
        scale = teacher.config["update_scale"]
        for number, path in enumerate(files):
            blob = torch.load(path)
            kinds = [blob["kinds"].get(n) for n in blob["names"]]
            graphs = {options: build_neural_graph(blob["names"], blob["shapes"], kinds, **dict(options))
                      for options in {tuple(sorted(r.graph_options.items())) for r in (teacher, student)}}
            teacher_graph = graphs[tuple(sorted(teacher.graph_options.items()))]
            student_graph = graphs[tuple(sorted(student.graph_options.items()))]
            sizes = [math.prod(s) for s in blob["shapes"]]
            for pair in blob["pairs"]:
                with torch.no_grad():
                    context, _ = teacher.context(_features(pair["anchor"]), teacher_graph)
                    d, m = teacher.readout(_features(pair["later"]), context, teacher_graph).unbind(1)
                target = d * scale * torch.exp(scale * m)
                self.items.append({"task": blob["task"], "anchor": pair["anchor"], "later": pair["later"],
                                   "target": target, "graph": student_graph, "sizes": sizes, "file": number,
                                   "window": pair.get("window")})

    def __len__(self) -> int:
        return len(self.items)

    def runs(self) -> list[list[dict[str, Any]]]:
        """The pairs as runs of consecutive windows of one trajectory, each in order."""
        runs: list[list[dict[str, Any]]] = []
        for item in sorted(self.items, key=lambda i: (i["file"], i["window"] or 0)):
            last = runs[-1][-1] if runs else None
            if last is not None and last["file"] == item["file"] and item["window"] is not None \
                    and last["window"] == item["window"] - 1:
                runs[-1].append(item)
            else:
                runs.append([item])
        return runs

    def examples(self, stateful: bool) -> list[list[dict[str, Any]]]:
        """What a student is trained and scored on: single pairs, or for a stateful one the runs
        longer than the burn-in (:func:`run_errors`)."""
        if not stateful:
            return [[item] for item in self.items]
        return [run for run in self.runs() if len(run) > BURN_IN]


def _features(raw: Tensor) -> Tensor:
    return element_features(raw[0], raw[1], raw[2:])


def relative_error(delta: Tensor, target: Tensor, sizes: list[int]) -> Tensor:
    """Mean over tensors of ``mean((delta - target)^2) / mean(target^2)``: each tensor's update
    counts alike whatever its size and scale."""
    errors = [((a - b).pow(2).mean() / b.pow(2).mean().clamp_min(1e-20))
              for a, b in zip(delta.split(sizes), target.split(sizes))]
    return torch.stack(errors).mean()


def student_update(student: UpdateRule, item: dict[str, Any], state: RuleState = None) -> tuple[Tensor, RuleState]:
    """The student's update on a pair (context from the anchor, readout at the later step) and
    its new recurrent state (``None`` for a stateless rule)."""
    graph = item["graph"]
    context, state = student.context(_features(item["anchor"]), graph, state)
    d, m = student.readout(_features(item["later"]), context, graph).unbind(1)
    scale = student.config["update_scale"]
    return d * scale * torch.exp(scale * m), state


def run_errors(student: UpdateRule, run: list[dict[str, Any]]) -> list[Tensor]:
    """The relative error of each scored pair of a run: every pair for a stateless student; for
    a stateful one, those after the first :data:`BURN_IN`, its state carried along the run."""
    if not student.stateful:
        return [relative_error(student_update(student, item)[0], item["target"], item["sizes"]) for item in run]
    errors, state = [], None
    for i, item in enumerate(run):
        delta, state = student_update(student, item, state)
        if i >= BURN_IN:
            errors.append(relative_error(delta, item["target"], item["sizes"]))
    return errors


def evaluate_pairs(student: UpdateRule, pairs: _Pairs) -> dict[str, float]:
    """Mean relative error per task."""
    by_task: dict[str, list[float]] = {}
    with torch.no_grad():
        for run in pairs.examples(student.stateful):
            for error in run_errors(student, run):
                by_task.setdefault(run[0]["task"], []).append(error.item())
    return {task: sum(v) / len(v) for task, v in by_task.items()}


def main_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    teacher = UpdateRule.from_pretrained(args.teacher)
    form = {k: teacher.config[k] for k in UPDATE_FORM_DEFAULTS}
    student = create(args.rule, **{**form, **json.loads(args.rule_config)})
    files = sorted(args.data.glob("*.pt"))
    held = [f for f in files if f.stem.endswith(f"-s{args.held_out_seed}")]
    train_files = [f for f in files if f not in held]
    train, val = _Pairs(train_files, teacher, student), _Pairs(held, teacher, student)
    examples = train.examples(student.stateful)
    if student.stateful and not (examples and val.examples(True)):
        raise ValueError(f"a stateful student ('{student.name}') needs runs of more than {BURN_IN} consecutive "
                         f"windows: collect its data with --segments")
    print(f"{len(train)} training pairs, {len(val)} held out; student {sum(p.numel() for p in student.parameters()):,} "
          f"weights", flush=True)
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    best, running, start = math.inf, 0.0, time.time()
    for step in range(1, args.steps + 1):
        loss = torch.stack(run_errors(student, examples[rng.randrange(len(examples))])).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running += loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            errors = evaluate_pairs(student, val)
            mean = sum(errors.values()) / len(errors)
            row = {"step": step, "train": running / args.eval_every, "held_out": mean, "by_task": errors,
                   "seconds": round(time.time() - start)}
            running = 0.0
            print(json.dumps(row), flush=True)
            with open(args.out / "distill.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
            if mean < best:
                best = mean
                student.save_pretrained(args.out / "best", extra={
                    "distillation": {"teacher": args.teacher, "data": str(args.data), "step": step,
                                     "held_out_error": mean, "steps": args.steps, "lr": args.lr}})


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """A recipe stage that distills (:mod:`gnnopt.training.recipe`): ``collect`` then ``train``.

    ``teacher`` is a checkpoint (in a recipe, ``"@stage"``: an earlier stage's selected rule),
    used with ``teacher_config`` (update-form options, as it is shipped) set in its config.
    """

    teacher: str
    teacher_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    tasks: str = "fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2"
    collect_steps: int = 1500
    trajectories: int = 3
    windows: int = 40
    segments: int = 0
    rule: str = "pna"
    rule_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 3000
    lr: float = 1e-3
    eval_every: int = 250
    held_out_seed: int = 3
    seed: int = 0
    embedded: bool = False

    #: what a recipe's ``--smoke`` overrides (:meth:`smoke`): seconds on the embedded subset
    SMOKE: ClassVar[dict[str, Any]] = {"collect_steps": 8, "windows": 2, "steps": 4, "eval_every": 2, "embedded": True}

    def smoke(self) -> DistillConfig:
        """The stage in seconds: :attr:`SMOKE`, and for a stateful student enough steps for its
        runs of windows to outlast the burn-in (with ``teacher_config``'s ``graph_every``)."""
        options = {**self.to_dict(), **self.SMOKE}
        if self.segments:
            options["windows"] = self.segments * (BURN_IN + 1)
            options["collect_steps"] = options["windows"] * self.teacher_config.get("graph_every", 1)
        return DistillConfig.from_dict(options)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> DistillConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(options) - names
        if unknown:
            raise ValueError(f"unknown distillation option(s) {sorted(unknown)}; valid: {sorted(names)}")
        if "teacher" not in options:
            raise ValueError("a distillation stage needs a teacher")
        wrong = set(options.get("teacher_config", {})) - set(UPDATE_FORM_DEFAULTS)
        if wrong:
            raise ValueError(f"teacher_config may set only {', '.join(sorted(UPDATE_FORM_DEFAULTS))} (options that "
                             f"change no weight), not {', '.join(sorted(wrong))}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def task_names(self) -> list[str]:
        return self.tasks.split(",")

    def argv(self, teacher: str | Path, out: Path) -> tuple[list[str], list[str]]:
        """The ``collect`` and ``train`` arguments (data in ``out/data``, the student in ``out``)."""
        collect = ["collect", "--teacher", str(teacher), "--tasks", self.tasks, "--steps", str(self.collect_steps),
                   "--trajectories", str(self.trajectories), "--windows", str(self.windows),
                   *(["--segments", str(self.segments)] if self.segments else []),
                   *(["--embedded"] if self.embedded else []), "--out", str(out / "data")]
        train = ["train", "--teacher", str(teacher), "--data", str(out / "data"), "--rule", self.rule,
                 "--rule-config", json.dumps(self.rule_config), "--steps", str(self.steps), "--lr", str(self.lr),
                 "--eval-every", str(self.eval_every), "--held-out-seed", str(self.held_out_seed),
                 "--seed", str(self.seed), "--out", str(out)]
        return collect, train

    def status(self, out: Path) -> str:
        """``"done"``, ``"stopped at N/M"`` (training restarts) or ``"not started"``."""
        log = out / "distill.jsonl"
        if not log.is_file():
            return "not started"
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        step = rows[-1]["step"] if rows else 0
        return "done" if step >= self.steps and (out / "best").is_dir() else f"stopped at {step}/{self.steps}"

    def run(self, teacher: Path, out: Path) -> None:
        """Collect (skipping finished files), then train the student afresh unless done."""
        if self.status(out) == "done":
            return
        collect, train = self.argv(teacher, out)
        main(collect)
        (out / "distill.jsonl").unlink(missing_ok=True)
        main(train)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("collect", help="save teacher trajectories' input pairs")
    c.add_argument("--teacher", required=True, help="the rule to learn from: a checkpoint folder or bundled name")
    c.add_argument("--tasks", default="fmnist17,fmnist17-w8,fmnist17-d1,fmnist17-d2")
    c.add_argument("--steps", type=int, default=1500)
    c.add_argument("--trajectories", type=int, default=3)
    c.add_argument("--windows", type=int, default=40)
    c.add_argument("--segments", type=int, default=0,
                   help="draw the windows as this many runs of consecutive ones (data for a stateful student)")
    c.add_argument("--graph-every", type=int, default=None)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--embedded", action="store_true", help="the small bundled data set (tests, smoke runs)")
    c.add_argument("--out", type=Path, required=True)
    t = commands.add_parser("train", help="fit a student rule to the teacher's updates")
    t.add_argument("--teacher", required=True)
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--rule", default="pna")
    t.add_argument("--rule-config", default="{}")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--held-out-seed", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "collect":
        main_collect(args)
    else:
        main_train(args)


if __name__ == "__main__":
    main()
