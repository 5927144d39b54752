"""The meta-training configuration: a frozen dataclass, written to ``config.json``."""
from __future__ import annotations

import dataclasses
from typing import Any

OBJECTIVES = ("greedy", "tbptt", "es")
#: the option groups of ``python -m gnnopt.training --help``, in order
GROUPS = ("task", "rule", "objective", "episodes", "meta-optimizer", "selection", "run")
#: options a resumed run may change: they do not alter what was already trained
RESUMABLE = ("outer_steps", "eval_every", "save_every")


def _opt(default: Any, group: str, help: str) -> Any:
    """A config field with its command-line group and help (the flags are generated from them)."""
    assert group in GROUPS, group
    meta = {"group": group, "help": help}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a meta-training run.

    An outer step runs ``meta_batch_size`` episodes (per process) of ``inner_steps`` inner
    steps each, then makes one meta-update of the rule with AdamW (``lr``,
    ``weight_decay``, cosine schedule over ``outer_steps``, gradient-norm clipping at
    ``clip`` unless 0). After outer step ``random_inner_steps_after`` (when set), each
    episode lasts ``int(inner_steps * U(random_inner_steps_min, random_inner_steps_max))``
    steps ("GNN-variable"). ``init`` starts the rule from a saved one (a bundled name or a
    checkpoint directory of the same rule and configuration) instead of a random one;
    ``init_head`` starts only the rule's per-element head from a saved rule's head (e.g. a
    GNN rule from a trained ``ff``), with the graph-embedding inputs of its first layer at
    zero, so the new rule starts as exactly the saved one and learns what the graph adds.
    ``second_order`` (tbptt only) back-propagates through the gradients the optimizee's
    parameters produce as well (``create_graph=True``), not only through the updates.
    Model selection averages the validation accuracy of ``eval_seeds`` episodes.

    ``task`` is one task name, or several comma-separated ones on the same data set (e.g.
    ``"fmnist17,fmnist17-w8,fmnist17-d1"``): each episode then trains one of them, drawn from
    its seed, and model selection averages the validation accuracy over all of them.

    ``segment_steps`` (when set) makes episodes persist across outer steps: each outer step
    advances every episode by at most ``segment_steps`` inner steps and meta-updates on
    those, and a new episode starts only when one has run its full length. The rule then
    learns from every stage of long episodes (thousands of steps) at the cost of a segment
    per meta-update (truncated meta-training; Metz et al. 2019). With several episodes per
    process, the first ones are cut short at staggered lengths so they do not all restart
    together.

    ``objective="es"`` estimates the meta-gradient without differentiating through the
    unroll (antithetic evolution strategies; Salimans et al. 2017, Metz et al. 2019): each
    segment is run ``2 * es_pairs + 1`` times from the same state on the same batches, with
    the meta-trained parameters moved by ``+-es_sigma`` times a Gaussian draw, and the
    differences of the meta-losses weight the draws. Its cost does not depend on how chaotic
    the unroll is, but its noise grows with the number of parameters trained: pair it with
    ``train_only`` on a small part of a rule. ``es_tail`` (when set) makes each run's
    meta-loss the mean loss of only its last ``es_tail`` steps, e.g. the end of a whole episode
    (``segment_steps`` unset), which is what an evaluation reads; the mean over all steps
    rewards early progress instead.

    ``train_only`` (when set) meta-trains only the rule's parameters under these
    comma-separated module names (e.g. ``"head"``); the others keep their initial
    (usually ``init``) values. A fine-tune can then learn one part of a saved rule (a small
    step-size module, say), at its own learning rate, without the rest drifting.

    Every field carries its command-line group and help in its metadata:
    ``python -m gnnopt.training`` generates its flags from them.
    """

    task: str = _opt("fmnist17", "task", "a task, or several comma-separated ones on one data set (each episode "
                     "draws one; selection averages their validation accuracies)")
    rule: str = _opt("pna", "rule", "ff, lstm, pna, rt or pna_lstm")
    rule_config: dict[str, Any] = _opt({}, "rule", "rule options as JSON, e.g. '{\"head_layers\": 3}' "
                                       "(default: the paper configuration)")
    objective: str = _opt("greedy", "objective", "greedy, tbptt or es")
    unroll: int = _opt(10, "objective", "tbptt truncation length")
    second_order: bool = _opt(False, "objective", "tbptt: back-propagate through the optimizee's gradients too")
    inner_steps: int = _opt(100, "episodes", "inner steps of an episode")
    outer_steps: int = _opt(1000, "meta-optimizer", "meta-updates of the run (may grow on --resume; the cosine "
                            "schedule then spans the new length)")
    meta_batch_size: int = _opt(1, "episodes", "episodes per meta-update (per process)")
    random_inner_steps_after: int | None = _opt(None, "episodes", "from this outer step on, episodes last "
                                                "inner_steps * U(min, max) steps")
    random_inner_steps_min: float = _opt(0.75, "episodes", "random episode length: lower factor")
    random_inner_steps_max: float = _opt(2.5, "episodes", "random episode length: upper factor")
    lr: float = _opt(3e-4, "meta-optimizer", "AdamW learning rate of the rule (cosine schedule)")
    weight_decay: float = _opt(1e-4, "meta-optimizer", "AdamW weight decay")
    warmup_steps: int = _opt(0, "meta-optimizer", "linear warm-up of the meta learning rate")
    clip: float = _opt(1.0, "meta-optimizer", "meta-gradient norm clip (0: off)")
    eval_every: int = _opt(25, "selection", "validate (and maybe select) every this many outer steps")
    eval_steps: int | None = _opt(None, "selection", "validation episode length (default: inner_steps)")
    eval_seeds: int = _opt(1, "selection", "validation episodes averaged for model selection")
    save_every: int = _opt(5, "run", "save the resumable state every this many outer steps")
    seed: int = _opt(0, "run", "seed of the rule's initialisation and of every episode")
    embedded: bool = _opt(False, "task", "train on the small embedded FashionMNIST subset (smoke runs only)")
    init: str | None = _opt(None, "rule", "start from a saved rule of the same kind (fine-tuning); options "
                            "not given take its values")
    init_head: str | None = _opt(None, "rule", "start the rule's head from a saved rule's head (e.g. a trained ff), "
                                 "graph inputs at zero")
    segment_steps: int | None = _opt(None, "episodes", "inner steps per outer step; longer episodes carry over "
                                     "to the next outer steps")
    train_only: str | None = _opt(None, "rule", "meta-train only the parameters under these comma-separated "
                                  "module names; the rest keeps its initial values")
    es_pairs: int = _opt(4, "objective", "es: antithetic pairs of perturbations per segment")
    es_sigma: float = _opt(0.01, "objective", "es: perturbation scale")
    es_tail: int | None = _opt(None, "objective", "es: score each run on the mean loss of its last K steps only")
    graph_every: int = _opt(1, "episodes", "run the rule's graph part every K inner steps only, the steps in "
                            "between reading its context (GNNOptimizer(graph_every=K))")

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not all(self.task_names):
            raise ValueError(f"Invalid task: {self.task!r} (a task name, or several separated by commas)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"Invalid objective: {self.objective!r} (choose from {', '.join(OBJECTIVES)})")
        for name in ("unroll", "inner_steps", "outer_steps", "meta_batch_size", "eval_every", "eval_seeds",
                     "save_every", "es_pairs", "graph_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (a positive integer is required)")
        if self.second_order and self.objective != "tbptt":
            raise ValueError("second_order needs objective='tbptt' "
                             "(greedy and es do not differentiate through the inner steps)")
        if self.segment_steps is not None and (
            isinstance(self.segment_steps, bool) or not isinstance(self.segment_steps, int) or self.segment_steps < 1
        ):
            raise ValueError(f"Invalid segment_steps: {self.segment_steps!r} (a positive integer or None)")
        if isinstance(self.es_sigma, bool) or not isinstance(self.es_sigma, (int, float)) or not self.es_sigma > 0:
            raise ValueError(f"Invalid es_sigma: {self.es_sigma!r} (a positive number is required)")
        if self.es_tail is not None and (
            isinstance(self.es_tail, bool) or not isinstance(self.es_tail, int) or self.es_tail < 1
        ):
            raise ValueError(f"Invalid es_tail: {self.es_tail!r} (a positive integer or None)")
        if self.train_only is not None and (not isinstance(self.train_only, str) or not all(self.trained_modules)):
            raise ValueError(f"Invalid train_only: {self.train_only!r} (module names separated by commas)")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"Invalid eval_steps: {self.eval_steps}")
        if self.random_inner_steps_after is not None and self.random_inner_steps_after < 0:
            raise ValueError(f"Invalid random_inner_steps_after: {self.random_inner_steps_after}")
        if not 0 < self.random_inner_steps_min <= self.random_inner_steps_max:
            raise ValueError(
                f"Invalid random inner steps range [{self.random_inner_steps_min}, {self.random_inner_steps_max}]"
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.clip < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"Invalid lr={self.lr}, weight_decay={self.weight_decay}, clip={self.clip} "
                f"or warmup_steps={self.warmup_steps}"
            )

    @property
    def task_names(self) -> list[str]:
        """``task`` split into its task names."""
        return [name.strip() for name in self.task.split(",")]

    @property
    def trained_modules(self) -> list[str]:
        """The module names of ``train_only`` (empty: the whole rule is meta-trained)."""
        return [name.strip() for name in self.train_only.split(",")] if self.train_only is not None else []

    @property
    def selection_steps(self) -> int:
        """Length of the validation episode used for model selection."""
        return self.eval_steps or self.inner_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown training option(s): {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def normalize(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A stored config with the options added since it was written at their defaults."""
        return cls.from_dict(data).to_dict()
