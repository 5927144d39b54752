"""Write docs/EXPERIMENTS.md: one row per finished run (question, recipe, figure, verdict, commit).

The question and the verdict of each run are written by hand below (from its ``recipe.sh``
and the Results story, docs/RESULTS.md); everything else is read from the run's files:
the recipe in brief from ``config.json``, the best validation accuracy from
``best/config.json`` (or ``metrics.jsonl``), the test accuracies from ``eval-*/results.json``.
The files are read from the work tree when present, else from the commit that last held
them (``git show COMMIT:PATH``), so the page can be rebuilt after the folders are gone::

    python scripts/experiments_index.py            # writes docs/EXPERIMENTS.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

COMMIT = "a2a8660"  # the last commit holding every run folder below
ADAM = "training/eval-fmnist17"  # tuned Adam on task 17 (lr 1e-2), the reference of every margin

#: (run folder, question, verdict), in the order of the story
RUNS: tuple[tuple[str, str, str], ...] = (
    # the shipped chain: ff -> pna stages 1-4
    ("training/ff-fmnist17", "Does truncated BPTT (unroll 20, first order) get ff past the greedy objective's stall?",
     "yes; its rule became the head every graph rule starts from (not bundled: decays over 5,000 steps)"),
    ("training/pna-fmnist17", "Stage 1: does pna with an ff-initialised head learn from second-order 20-step truncations?",
     "selected: became stage 1 of pna-fmnist17; declines over 5,000 steps"),
    ("training/pna-long-fmnist17", "Stage 2: do persistent 1,000-5,000-step episodes stop stage 1's long-run decline?",
     "selected: became stage 2; long runs now improve, at a cost after 1,000 steps"),
    ("training/pna-multi-fmnist17", "Stage 3: does meta-training on task 17, w8, d1 and d2 at once recover the small networks?",
     "selected: became stage 3 (bundled until stage 4)"),
    ("training/experiments/pna-unroll100", "Stage 4: do 100-step truncations undo the short-horizon bias of stage 3?",
     "selected: became stage 4, the shipped pna-fmnist17 (recipes/pna-fmnist17)"),
    # stage 4 variants and probes
    ("training/pna-var-fmnist17", "Do random episode lengths (SPEC's GNN-variable, 750-2,500 steps) improve stage 4?",
     "within seed noise of stage 4; misses the +2 bar, not bundled"),
    ("training/experiments/pna-var-lr1e-5", "pna-var at a third of its learning rate: does validation move?",
     "validation barely moved; not evaluated"),
    ("training/experiments/pna-var-lr1e-4", "pna-var at stage 4's learning rate, 150 outer steps: does it change the rule?",
     "within seed noise of stage 4; random episode lengths neither help nor hurt; line closed"),
    ("training/experiments/pna-unroll200", "Stage 5 probe: do 200-step truncations teach the step sizes 100 could not?",
     "no usable meta-gradient (norms exploded, half the updates non-finite), validation fell; no weights kept"),
    ("training/experiments/pna-stephead", "Can a log-step head, fine-tuned with the whole rule, learn per-network step sizes?",
     "the head barely moved while validation fell"),
    ("training/experiments/pna-stephead-only", "The log-step head trained alone by back-propagation through 100 steps?",
     "moved the steps the wrong way (smaller), validation fell, meta-gradients turned non-finite"),
    ("training/experiments/pna-stephead-es", "The head alone with evolution strategies on 100-step segments?",
     "finite meta-gradients but smaller steps everywhere: the 100-step meta-loss itself asks for small steps"),
    ("training/experiments/pna-stephead-es1000", "The head alone with ES over whole 1,000-step episodes (no truncation)?",
     "larger steps on every network alike: d1 gained, task 17 lost"),
    ("training/experiments/pna-stephead-es1000-tail", "ES scored on each episode's last 100 steps (`--es-tail 100`)?",
     "mean validation up, but one step scale for all networks (task 17 fell); step-head line closed"),
    # early experiments that chose the objective and the initialisation
    ("training/experiments/ff-greedy-100", "Does ff learn with the greedy objective on 100-step episodes?",
     "stalled, then fell (short-horizon bias): led to truncated BPTT for ff-fmnist17"),
    ("training/experiments/ff-finetune-random", "Does fine-tuning ff-fmnist17 on random 150-500-step episodes (first order) help?",
     "drifted to worse rules"),
    ("training/experiments/ff-finetune-random-2nd", "The same with `--second-order`: was the first-order bias the cause?",
     "no drift, but no gain and decays over 5,000 steps; second order kept for every later run"),
    ("training/experiments/pna-scratch-tbptt-200", "Can pna be meta-trained from scratch (first-order TBPTT) on 2 cores?",
     "far too slow on 2 cores: led to the ff-initialised head"),
    ("training/experiments/pna-init-ff-1st", "pna with its head started as ff-fmnist17, first order?",
     "below its ff start: second order adopted (pna-fmnist17)"),
    # pna_lstm: stage 1 as pna's, then pna's stage-4 recipe, then pna's stages 2-4
    ("training/pna-lstm-fmnist17", "pna_lstm stage 1: pna's stage-1 recipe for the recurrent rule?",
     "selected: stage 1 of the pna_lstm chain"),
    ("training/experiments/pna-lstm-unroll100", "pna_lstm stage 2: pna's stage-4 recipe, skipping its stages 2-3?",
     "validation rose as pna's did; test below +2 and decays over 5,000 steps"),
    ("training/experiments/pna-lstm-long", "pna_lstm stage 3 (first try): long persistent episodes, 100-step truncations?",
     "only got worse (selected step 0); replaced by pna-lstm-long20"),
    ("training/experiments/pna-lstm-long20", "pna_lstm stage 3: pna's stage-2 recipe (long episodes, 20-step truncations)?",
     "selected: long-run decay turned into a gain, 1,000-step figure fell (as pna's stage 2)"),
    ("training/experiments/pna-lstm-multi", "pna_lstm stage 4: pna's stage-3 recipe on the four networks?",
     "selected: brought the 1,000-step figure back"),
    ("training/experiments/pna-lstm-stage5", "pna_lstm stage 5: pna's stage-4 recipe on stage 4?",
     "selected: pna_lstm's best, passes criterion 4 (improves over 5,000 steps) but short of +2; kept"),
    ("training/experiments/pna-lstm-var", "pna_lstm stage 6: random episode lengths, as pna-var?",
     "below stage 5 and within validation noise; stage 5 kept"),
    # lstm and rt: the same short chain
    ("training/lstm-fmnist17", "lstm stage 1: pna's stage-1 recipe for the lstm rule?",
     "selected: stage 1 of the lstm chain; not evaluated"),
    ("training/experiments/lstm-unroll100", "lstm stage 2: pna's stage-4 recipe on stage 1?",
     "validation rose; test below +2 and decays over 5,000 steps"),
    ("training/experiments/lstm-long", "lstm stage 3: long persistent episodes with 100-step truncations?",
     "selected: lstm's best on test, but still decays over 5,000 steps; kept"),
    ("training/experiments/lstm-long20", "lstm stage 3b: pna's stage-2 recipe, as pna-lstm-long20?",
     "stopped the decay but cost the 1,000-step figure"),
    ("training/experiments/lstm-multi", "lstm stage 4b: pna's stage-3 recipe on stage 3b?",
     "validation flat, test lower still; lstm keeps stage 3 (lstm-long); line closed"),
    ("training/rt-fmnist17", "rt stage 1: pna's stage-1 recipe for the rt rule?",
     "selected: rt's kept rule (its stage 2 selected step 0); decays over 5,000 steps"),
    ("training/experiments/rt-unroll100", "rt stage 2: pna's stage-4 recipe on stage 1?",
     "validation fell: selected step 0, rt keeps stage 1"),
    # evaluation-only folders
    ("training/eval-fmnist17", "Task 17 test after 1,000 steps: stages 1-2, ff-fmnist17 and tuned Adam side by side",
     "holds the tuned-Adam row every margin here is measured against"),
    ("training/experiments/adam-5000", "Tuned Adam (lr 1e-2) over 5,000 steps, the long-run reference",
     "Adam keeps improving and ends above every rule over 5,000 steps"),
)


def read(path: str) -> str | None:
    """A file from the work tree, else from COMMIT; None when neither has it."""
    if Path(path).is_file():
        return Path(path).read_text()
    done = subprocess.run(["git", "show", f"{COMMIT}:{path}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def read_json(path: str) -> dict | None:
    text = read(path)
    return json.loads(text) if text else None


def pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def brief(training: dict) -> str:
    """Rule, objective and init of a meta-training run, from its config.json."""
    objective = training["objective"]
    if objective == "tbptt":
        objective += f" {training['unroll']}, {'2nd' if training.get('second_order') else '1st'} order"
    nets = len(training["task"].split(","))
    parts = [f"`{training['rule']}`", objective, f"{nets} nets" if nets > 1 else "task 17",
             f"lr {training['lr']:.0e}".replace("e-0", "e-")]
    if training.get("train_only"):
        parts.append(f"train only `{training['train_only']}`")
    init = training.get("init") or training.get("init_head")
    label = "init" if training.get("init") else "head"
    parts.append(f"{label} `{Path(init).parent.name}`" if init else "from scratch")
    return ", ".join(parts)


def figure(path: str, name: str, adam: float) -> str:
    """Best validation accuracy and the task-17 test accuracies, from the run's files."""
    out = []
    config = read_json(f"{path}/config.json")
    sel = ((read_json(f"{path}/best/config.json") or {}).get("selection"))
    if sel is None and config:  # no best/: the best validation point in metrics.jsonl
        points = [json.loads(line) for line in (read(f"{path}/metrics.jsonl") or "").splitlines() if line.strip()]
        sel = max((p for p in points if "val_acc" in p), key=lambda p: p["val_acc"], default=None)
    if sel and config:
        t = config["training"]
        nets = len(t["task"].split(","))
        what = f"{'mean of ' + str(nets) + ' nets, ' if nets > 1 else ''}{t['eval_steps']:,}-step episodes"
        out.append(f"val {100 * sel['val_acc']:.2f}% (step {sel['step']}; {what})")
    if config and sel:
        points = [json.loads(line) for line in (read(f"{path}/metrics.jsonl") or "").splitlines() if line.strip()]
        last, planned = max(p["step"] for p in points), config["training"]["outer_steps"]
        if last < planned:
            out[-1] += f"; stopped at outer step {last} of {planned}"
    rows = []  # (folder, row) of every evaluation of this run, the 1,000-step ones first
    for folder in ("eval-1000", "eval-fmnist17", "eval-5000", ""):
        source = ADAM if folder == "eval-fmnist17" else f"{path}/{folder}".rstrip("/")
        if folder == "eval-fmnist17" and path == ADAM:
            continue
        results = read_json(f"{source}/results.json") or {}
        rows += [(folder or name, r) for r in results.get("rows", [])
                 if folder == "" or r["method"] == f"{name}/best"]
    for folder, r in rows:
        who = "" if r["method"] == f"{name}/best" else f"{r['method']}: "
        if r["steps"] == 1000:
            margin = 100 * (r["mean"] - adam)
            vs = "" if r["method"].startswith("adam") else f"{margin:+.2f} vs Adam; ".replace("-", "−")
            out.append(f"{who}test {pm(r['mean'], r['std'])} ({vs}{len(r['seeds'])} seeds, `{folder}`)")
        else:
            at = r.get("at", {}).get("1000")
            start = f"{pm(at['mean'], at['std'])} → " if at else ""
            out.append(f"{who}over {r['steps']:,} steps {start}{pm(r['mean'], r['std'])} "
                       f"({len(r['seeds'])} seeds, `{folder or name}`)")
    return "; ".join(out) or "no figure (not validated)"


#: the heading from which a section written by hand starts; regenerating keeps it
KEPT_FROM = "## Since `a2a8660`"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/EXPERIMENTS.md"))
    args = p.parse_args()
    adam_row = next(r for r in read_json(f"{ADAM}/results.json")["rows"] if r["method"].startswith("adam"))
    lines = [
        "# Experiments",
        "",
        "One row per finished meta-training run or evaluation of the FashionMNIST work (task 17",
        "and its width/depth variants). Each run's record, `runs/<name>.md`, holds its recipe and",
        "command, options, selection, validation trajectory and evaluation tables with their",
        "commands. The run folders themselves (weights, trainer state, curves) have left the work",
        "tree; to get one back, check it out from the commit in the last column, e.g.",
        "",
        f"    git checkout {COMMIT} -- training/experiments/pna-unroll100",
        "",
        f"(or read one file: `git show {COMMIT}:training/experiments/pna-unroll100/metrics.jsonl`).",
        "The `pna-stephead*` runs used a log-step head (`step_head_gain`) that no shipped rule uses;",
        "it was removed from the code after them, so rerunning them needs that commit too.",
        "The story behind the rows is in [RESULTS.md](RESULTS.md); the shipped checkpoint's recipe",
        "is in `recipes/pna-fmnist17/`.",
        "",
        "Figures: \"val\" is the selected (best) validation accuracy of the run, on the networks and",
        "episode length given; \"test\" is task-17 test accuracy after 1,000 steps, mean ± std over",
        f"the seeds, with its margin over tuned Adam ({pm(adam_row['mean'], adam_row['std'])}, lr 1e-2,",
        "`eval-fmnist17`); \"over 5,000 steps\" gives after 1,000 → after 5,000. All are read from the",
        "runs' files by `python scripts/experiments_index.py`, which writes this page.",
        "",
        "| run | question | recipe in brief (rule, objective, init) | figure | verdict | full run at |",
        "|---|---|---|---|---|---|",
    ]
    for path, question, verdict in RUNS:
        name = Path(path).name
        config = read_json(f"{path}/config.json")
        recipe = brief(config["training"]) if config else "evaluation only (`python -m gnnopt.eval`)"
        lines.append(f"| [{name}](runs/{name}.md) | {question} | {recipe} | "
                     f"{figure(path, name, adam_row['mean'])} | {verdict} | `{COMMIT}` |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # sections added by hand after the generated table (later evaluations, probes) are kept
    old = args.out.read_text() if args.out.exists() else ""
    kept = old[old.index(KEPT_FROM):] if KEPT_FROM in old else ""
    args.out.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
    print(f"wrote {args.out} ({len(RUNS)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
