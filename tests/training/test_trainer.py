"""Meta-training: it learns, resumes exactly, honours its options, and selects on validation."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gnnopt import GNNOptimizer
from gnnopt.bench.data import Dataset, load_dataset, synthetic_cifar10
from gnnopt.bench.protocol import run_learned_episode
from gnnopt.rules import load_rule
from gnnopt.bench.tasks import get_task
from gnnopt.features import RAW_FEATURES
from gnnopt.training import MetaTrainer, TrainConfig, checkpoint, meta_train
from gnnopt.training.__main__ import main as training_main
from gnnopt.training.checkpoint import read_metrics
from gnnopt.rules import FFRule
from gnnopt.training.episodes import Episode, episode_length, make_optimizee
from gnnopt.training.objectives import run_episode, run_segment

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset("fmnist", embedded=True)


def _weights(rule):
    return {k: v.detach().clone() for k, v in rule.state_dict().items()}


def _strip(records):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]


def test_cli_meta_training_beats_the_untrained_rule(tmp_path, data):
    """20 outer steps of `ff` give a rule whose 100-step validation loss is lower."""
    out = tmp_path / "run"
    code = training_main(["--task", "fmnist17", "--rule", "ff", "--outer-steps", "20", "--inner-steps", "20",
                          "--lr", "1e-3", "--eval-every", "10", "--eval-steps", "100", "--embedded",
                          "--out", str(out), "--no-progress", "--seed", "0"])
    assert code == 0
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "best/config.json", "best/model.safetensors"):
        assert (out / name).is_file(), name
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 21))
    task = get_task("fmnist17")
    trained = GNNOptimizer.from_pretrained(str(out / "best"), task.build_model()).rule
    torch.manual_seed(0)
    from gnnopt.rules import create

    untrained = create("ff")  # the run's starting point (same seed, same init)
    before = run_learned_episode(untrained, task, data, steps=100, seed=3)
    after = run_learned_episode(trained, task, data, steps=100, seed=3)
    assert after["loss"] < before["loss"] - 0.1, (before, after)


def test_resume_is_exact(tmp_path, data):
    cfg = TrainConfig(rule="pna_lstm", rule_config={"hidden": 8, "layers": 1}, outer_steps=4, inner_steps=3,
                      eval_every=2, save_every=1, embedded=True, lr=1e-3)
    full = meta_train(cfg, tmp_path / "full", data=data, progress=False)

    first = MetaTrainer(cfg, tmp_path / "split", data=data, progress=False)
    for _ in range(2):  # run 2 outer steps, save, then "crash"
        record = first.outer_step()
        if first.step % cfg.eval_every == 0:
            record.update(first._select())
        checkpoint.write_checkpoint(first.out, first.rule, cfg, first.step)
        checkpoint.append_metrics(first.out, record)
        checkpoint.save_trainer_state(first.out, first.rule, cfg, first.meta_opt, first.step, first.best)
    checkpoint.append_metrics(first.out, {"step": 3, "meta_loss": 0.0})  # written after the save: dropped
    resumed = meta_train(cfg, tmp_path / "split", resume=True, data=data, progress=False)
    for (k, a), b in zip(_weights(full).items(), _weights(resumed).values()):
        assert torch.equal(a, b), k
    assert _strip(read_metrics(tmp_path / "full")) == _strip(read_metrics(tmp_path / "split"))
    with pytest.raises(FileExistsError, match="--resume"):
        meta_train(cfg, tmp_path / "full", data=data, progress=False)
    other = TrainConfig(**{**cfg.to_dict(), "lr": 5e-4})
    with pytest.raises(ValueError, match="other options"):
        meta_train(other, tmp_path / "full", resume=True, data=data, progress=False)


@pytest.mark.parametrize("objective,meta_batch", [("greedy", 2), ("tbptt", 1), ("tbptt", 2), ("es", 1)])
def test_objectives_and_meta_batches_update_the_rule(tmp_path, data, objective, meta_batch):
    cfg = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 2}, objective=objective, unroll=3,
                      inner_steps=5, outer_steps=2, meta_batch_size=meta_batch, eval_every=10, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    before = _weights(trainer.rule)
    record = trainer.outer_step()
    after = _weights(trainer.rule)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert record["grad_norm"] > 0 and len(record["inner_steps"]) == meta_batch
    assert len(changed) == len(list(trainer.rule.parameters())), "every rule weight should move"


def test_init_starts_from_a_saved_rule(tmp_path, data):
    """``--init`` fine-tunes a saved rule: the run starts from its weights, not from a fresh rule."""
    base = TrainConfig(rule="ff", rule_config={"hidden": 8}, outer_steps=1, inner_steps=3, eval_every=1,
                       embedded=True, seed=1)
    meta_train(base, tmp_path / "base", data=data, progress=False)
    saved = _weights(GNNOptimizer.from_pretrained(str(tmp_path / "base" / "best"),
                                                  get_task("fmnist17").build_model()).rule)
    tuned = MetaTrainer(TrainConfig(**{**base.to_dict(), "init": str(tmp_path / "base" / "best")}),
                        tmp_path / "tuned", data=data, progress=False)
    for k, v in _weights(tuned.rule).items():
        assert torch.equal(v, saved[k]), k
    tuned.outer_step()
    assert any(not torch.equal(v, saved[k]) for k, v in _weights(tuned.rule).items())
    other = TrainConfig(**{**base.to_dict(), "rule_config": {"hidden": 16}, "init": str(tmp_path / "base")})
    with pytest.raises(ValueError, match="--init"):
        MetaTrainer(other, tmp_path / "other", data=data, progress=False)
    # options not given are the saved rule's: no need to repeat hidden 8
    bare = TrainConfig(**{**base.to_dict(), "rule_config": {}, "init": str(tmp_path / "base" / "best")})
    again = MetaTrainer(bare, tmp_path / "bare", data=data, progress=False)
    assert again.rule.config == tuned.rule.config and again.rule.config["hidden"] == 8
    for k, v in _weights(again.rule).items():
        assert torch.equal(v, saved[k]), k


def test_a_fine_tune_selects_against_its_starting_rule(tmp_path, data):
    """With ``--init``, the starting rule is validated at outer step 0 and competes for best/:
    a fine-tune that only makes the rule worse keeps the rule it started from."""
    base = TrainConfig(rule="ff", rule_config={"hidden": 8}, outer_steps=2, inner_steps=5, eval_every=1,
                       embedded=True, seed=1)
    meta_train(base, tmp_path / "base", data=data, progress=False)
    # a start well above chance (a rule meta-trained this briefly may not be): sign descent
    rule = FFRule(hidden=8)
    with torch.no_grad():
        for p in rule.parameters():
            p.zero_()
        rule.head.net[0].weight[0, RAW_FEATURES + 1] = 1.0  # the sign part of the gradient feature
        rule.head.net[-1].weight[0, 0] = -1.0  # direction -silu(sign g)
    rule.save_pretrained(tmp_path / "start")
    start = str(tmp_path / "start")
    # a meta-lr this large wrecks the rule in one step, so step 0 must stay the best
    worse = TrainConfig(**{**base.to_dict(), "init": start, "lr": 10.0, "clip": 0.0, "warmup_steps": 0})
    meta_train(worse, tmp_path / "tuned", data=data, progress=False)
    records = read_metrics(tmp_path / "tuned")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert "meta_loss" not in records[0] and "val_acc" in records[0]
    best = json.loads((tmp_path / "tuned" / "best" / "config.json").read_text())["selection"]
    assert best["step"] == 0 and best["val_acc"] > max(r["val_acc"] for r in records[1:])
    for k, v in _weights(load_rule(str(tmp_path / "tuned" / "best"))).items():
        assert torch.equal(v, _weights(load_rule(start))[k]), k
    # a run from scratch has no step-0 record
    assert read_metrics(tmp_path / "base")[0]["step"] == 1


def test_init_head_starts_a_gnn_rule_as_the_saved_ff_rule(tmp_path, data):
    """``--init-head``: a PNA rule whose head comes from an ff rule makes the same updates."""
    from gnnopt.rules import create

    torch.manual_seed(0)
    ff = create("ff", hidden=16)
    with torch.no_grad():
        ff.head.net[-1].weight.normal_()  # well away from the near-zero initial output
    ff.save_pretrained(tmp_path / "ff")
    cfg = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 1, "head_hidden": 16}, outer_steps=1,
                      inner_steps=2, embedded=True, init_head=str(tmp_path / "ff"))
    trainer = MetaTrainer(cfg, tmp_path / "run", data=data, progress=False)
    model = get_task("fmnist17").build_model()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    updates = []
    for rule in (ff, trainer.rule):
        copy = get_task("fmnist17").build_model()
        copy.load_state_dict(model.state_dict())
        for p, q in zip(copy.parameters(), model.parameters()):
            p.grad = q.grad.clone()
        GNNOptimizer(copy.named_parameters(), rule).step()
        updates.append(torch.cat([p.detach().flatten() for p in copy.parameters()]))
    assert torch.allclose(updates[0], updates[1], atol=1e-6)
    trainer.outer_step()
    assert trainer.rule.head.net[0].weight[:, :8].abs().sum() > 0  # the graph inputs start to count
    wrong = TrainConfig(**{**cfg.to_dict(), "rule_config": {"hidden": 8, "layers": 1}})  # head 64 wide
    with pytest.raises(ValueError, match="--init-head"):
        MetaTrainer(wrong, tmp_path / "wrong", data=data, progress=False)


def test_selection_averages_eval_seeds(tmp_path, data):
    cfg = TrainConfig(rule="ff", outer_steps=1, inner_steps=2, eval_steps=5, eval_seeds=2, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    runs = [run_learned_episode(trainer.rule, trainer.task, data, steps=5, seed=seed, split="val")
            for seed in (_selection_seed(cfg), _selection_seed(cfg) + 1)]
    val = trainer.validate()
    assert val["accuracy"] == pytest.approx(sum(r["accuracy"] for r in runs) / 2)
    assert val["loss"] == pytest.approx(sum(r["loss"] for r in runs) / 2)


def _selection_seed(cfg):
    from gnnopt.training.episodes import episode_seed

    return episode_seed(cfg.seed, 0, 0, 0) + 12_345


def test_resume_accepts_a_config_written_before_newer_options(tmp_path, data):
    cfg = TrainConfig(rule="ff", rule_config={"hidden": 8}, outer_steps=2, inner_steps=2, eval_every=5,
                      save_every=1, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    trainer.outer_step()
    checkpoint.write_checkpoint(tmp_path, trainer.rule, cfg, trainer.step)
    checkpoint.save_trainer_state(tmp_path, trainer.rule, cfg, trainer.meta_opt, trainer.step, trainer.best)
    stored = json.loads((tmp_path / "config.json").read_text())
    for newer in ("init", "init_head", "eval_seeds", "second_order"):
        del stored["training"][newer]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    meta_train(cfg, tmp_path, resume=True, data=data, progress=False)
    assert [r["step"] for r in read_metrics(tmp_path)] == [2]


def test_second_order_meta_gradient_differs_and_is_finite(tmp_path, data):
    """``second_order`` adds the terms through the optimizee's gradients: a different, finite
    meta-gradient from the same episode."""
    grads = []
    for second_order in (False, True):
        cfg = TrainConfig(rule="ff", rule_config={"hidden": 8}, objective="tbptt", unroll=4, inner_steps=8,
                          second_order=second_order, embedded=True)
        trainer = MetaTrainer(cfg, tmp_path / str(second_order), data=data, progress=False)
        trainer.outer_step()  # moves the rule off its near-zero start, where both agree
        trainer.meta_opt.zero_grad()
        optimizee = make_optimizee(trainer.task, data, 5, trainer.rule.graph_options, "cpu")
        run_episode(trainer.rule, optimizee, cfg, 8, 1.0)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.rule.parameters()]))
    assert torch.isfinite(grads[1]).all()
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("rule", ["pna", "pna_lstm"])
def test_recompute_gives_the_same_meta_gradient(tmp_path, data, rule):
    """Activation checkpointing of the rule (``recompute``) changes memory, not the result:
    the same second-order tbptt meta-gradient, through torch_geometric message passing and
    (pna_lstm) the recurrent state."""
    cfg = TrainConfig(rule=rule, rule_config={"hidden": 8, "layers": 2}, objective="tbptt", unroll=3,
                      inner_steps=6, second_order=True, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    trainer.outer_step()  # off the near-zero start, so the gradients are not trivially small
    grads = []
    for recompute in (False, True):
        trainer.meta_opt.zero_grad()
        optimizee = make_optimizee(trainer.task, data, 5, trainer.rule.graph_options, "cpu")
        loss = run_episode(trainer.rule, optimizee, cfg, 6, 1.0, recompute=recompute)
        grads.append((loss, torch.cat([p.grad.flatten() for p in trainer.rule.parameters()])))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    assert grads[0][1].abs().max() > 0
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-7)


def test_a_run_that_skips_most_meta_updates_is_warned_about_once():
    """Non-finite meta-gradients are skipped safely, but a run that skips most of them is
    told so (once), with what to change."""
    from gnnopt.training.trainer import SkipWatch

    watch = SkipWatch(window=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for skipped in (True, True, False, False, True, True):  # never more than half of the last 4
            watch.add(skipped)
    with pytest.warns(RuntimeWarning, match="3 of the last 4 meta-gradients were non-finite"):
        watch.add(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watch.add(True)  # once per run


def test_recompute_is_refused_for_greedy(tmp_path, capsys):
    assert training_main(["--objective", "greedy", "--recompute", "--embedded", "--out", str(tmp_path / "r")]) == 2
    assert "--recompute is for --objective tbptt" in capsys.readouterr().err


def test_segments_carry_episodes_across_outer_steps(tmp_path, data):
    """With segment_steps, a 7-step episode runs as 3 + 3 + 1 inner steps over three outer
    steps (momenta and parameters carried over), then a fresh episode starts."""
    cfg = TrainConfig(rule="ff", objective="tbptt", unroll=2, inner_steps=7, segment_steps=3, outer_steps=5,
                      eval_every=10, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    records = [trainer.outer_step() for _ in range(2)]
    ep = trainer.episodes[0]
    assert ep.done == 6 and float(ep.momenta[0].abs().sum()) > 0
    fresh = make_optimizee(trainer.task, data, ep.seed, trainer.rule.graph_options, "cpu")
    assert not torch.equal(ep.params[0], fresh.params[0])  # trained for six steps
    records += [trainer.outer_step() for _ in range(2)]
    assert [r["inner_steps"] for r in records] == [[3], [3], [1], [3]]
    assert [r["episode_step"] for r in records] == [[0], [3], [6], [0]]
    assert trainer.episodes[0].seed != ep.seed


def test_segments_stagger_the_first_episodes_of_a_meta_batch(tmp_path, data):
    cfg = TrainConfig(rule="ff", objective="greedy", inner_steps=8, segment_steps=4, meta_batch_size=2,
                      outer_steps=3, eval_every=10, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    records = [trainer.outer_step() for _ in range(3)]
    assert [e.length for e in trainer.episodes] == [8, 8]  # both were restarted at full length
    assert [r["episode_step"] for r in records] == [[0, 0], [0, 4], [4, 0]]


@pytest.mark.parametrize("rule,objective,graph_every", [("ff", "tbptt", 1), ("pna_lstm", "tbptt", 1),
                                                       ("ff", "es", 1), ("pna", "tbptt", 3)])
def test_resume_mid_episode_is_exact(tmp_path, data, rule, objective, graph_every):
    """A run stopped in the middle of persistent episodes resumes them exactly (task,
    parameters, momenta, recurrent state, kept graph context and batch stream), ending as
    the uninterrupted run does."""
    config = {"hidden": 8, "layers": 1} if rule.startswith("pna") else {"hidden": 8}
    tasks = "fmnist17" if rule == "pna_lstm" else "fmnist17,fmnist17-w8"
    cfg = TrainConfig(task=tasks, rule=rule, rule_config=config, objective=objective, unroll=2, inner_steps=9,
                      segment_steps=4, meta_batch_size=2, outer_steps=6, eval_every=3, save_every=100,
                      embedded=True, lr=1e-3, graph_every=graph_every)
    full = meta_train(cfg, tmp_path / "full", data=data, progress=False)
    first = MetaTrainer(cfg, tmp_path / "split", data=data, progress=False)
    checkpoint.write_checkpoint(first.out, first.rule, cfg, 0)
    for _ in range(4):
        record = first.outer_step()
        if first.step % cfg.eval_every == 0:
            record.update(first._select())
        checkpoint.append_metrics(first.out, record)
    first._save_state()
    resumed = meta_train(cfg, tmp_path / "split", resume=True, data=data, progress=False)
    for (k, a), b in zip(_weights(full).items(), _weights(resumed).values()):
        assert torch.equal(a, b), k
    assert _strip(read_metrics(tmp_path / "full")) == _strip(read_metrics(tmp_path / "split"))


def test_several_tasks_share_the_episodes(tmp_path, data):
    """A comma-separated --task trains each episode on one of the tasks (seeded, so a resumed
    run draws the same ones); selection averages over all of them; mixed data sets are refused."""
    cfg = TrainConfig(task="fmnist17,fmnist17-w8,fmnist17-d1", rule="ff", objective="tbptt", unroll=2,
                      inner_steps=4, segment_steps=2, outer_steps=12, eval_every=100, embedded=True)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    records = [trainer.outer_step() for _ in range(12)]
    drawn = [r["task"][0] for r in records]
    assert set(drawn) == {"fmnist17", "fmnist17-w8", "fmnist17-d1"}
    assert all(drawn[i] == drawn[i + 1] for i in range(0, 12, 2))  # an episode keeps its task
    shapes = [p.shape for p in get_task(drawn[-1]).build_model().parameters()]
    assert [p.shape for p in trainer.episodes[0].params] == shapes  # the drawn task's network
    val = trainer._select()
    assert set(val["val_acc_by_task"]) == {"fmnist17", "fmnist17-w8", "fmnist17-d1"}
    assert val["val_acc"] == pytest.approx(sum(val["val_acc_by_task"].values()) / 3)
    with pytest.raises(ValueError, match="share a data set"):
        MetaTrainer(TrainConfig(task="fmnist17,cifar10-cnn", rule="ff", embedded=True), tmp_path / "mixed",
                    data=data, progress=False)
    with pytest.raises(ValueError, match="Invalid task"):
        TrainConfig(task="fmnist17,")


def test_random_inner_steps_in_range():
    cfg = TrainConfig(inner_steps=100, random_inner_steps_after=3, random_inner_steps_min=0.75,
                      random_inner_steps_max=2.5)
    assert {episode_length(cfg, step, seed) for step in range(3) for seed in range(5)} == {100}
    lengths = [episode_length(cfg, 3 + s, seed) for s in range(20) for seed in range(10)]
    assert all(75 <= n <= 250 for n in lengths)
    assert max(lengths) - min(lengths) > 100  # it really varies


def test_invalid_training_options():
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="bptt")
    with pytest.raises(ValueError, match="meta_batch_size"):
        TrainConfig(meta_batch_size=0)
    with pytest.raises(ValueError, match="random inner steps"):
        TrainConfig(random_inner_steps_min=2.0, random_inner_steps_max=1.0)
    with pytest.raises(ValueError, match="eval_seeds"):
        TrainConfig(eval_seeds=0)
    with pytest.raises(ValueError, match="second_order"):
        TrainConfig(objective="greedy", second_order=True)
    with pytest.raises(ValueError, match="segment_steps"):
        TrainConfig(segment_steps=0)


class _Forbidden:
    def __getattr__(self, name):
        raise AssertionError(f"model selection read the test set (.{name})")

    def __len__(self):
        raise AssertionError("model selection read the test set (len)")


def test_selection_never_reads_the_test_set(tmp_path, data):
    guarded = Dataset(train=data.train, val=data.val, test=_Forbidden(), name=data.name, source=data.source)
    cfg = TrainConfig(rule="ff", outer_steps=2, inner_steps=3, eval_every=1, embedded=True)
    meta_train(cfg, tmp_path, data=guarded, progress=False)
    best = json.loads((tmp_path / "best" / "config.json").read_text())["selection"]
    assert 0 <= best["val_acc"] <= 1


def test_cifar_task_end_to_end_on_synthetic_tensors(tmp_path):
    """Synthetic CIFAR-shaped tensors (not a result): the code path runs, nothing more."""
    data = synthetic_cifar10(n_train=256, n_val=128, n_test=128)
    assert "not a result" in data.source
    cfg = TrainConfig(task="cifar10-cnn-w8", rule="pna", rule_config={"hidden": 8, "layers": 1},
                      outer_steps=2, inner_steps=2, eval_every=2, eval_steps=3)
    meta_train(cfg, tmp_path, data=data, progress=False)
    rule = GNNOptimizer.from_pretrained(str(tmp_path / "best"), get_task("11").build_model()).rule
    result = run_learned_episode(rule, get_task("cifar10-cnn-d5"), data, steps=2, seed=0, split="test")
    assert 0 <= result["accuracy"] <= 1


@pytest.mark.slow
def test_torchrun_two_processes_end_identical(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", "29533", str(HERE / "helpers" / "dist_worker.py"),
         str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert len(read_metrics(tmp_path)) == 3


def test_pipelined_backward_gives_the_sequential_gradient(tmp_path, data):
    """Running each backward beside the next forward (two threads) accumulates the same
    meta-gradient and meta-loss as running them one after the other, and leaves the
    thread count as it found it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 2, "head_hidden": 8}, objective="greedy",
                          inner_steps=6, embedded=True)
        trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
        results = []
        for pipeline in (False, True):
            trainer.meta_opt.zero_grad()
            optimizee = make_optimizee(trainer.task, data, 5, trainer.rule.graph_options, "cpu")
            loss = run_episode(trainer.rule, optimizee, cfg, 6, 1.0, pipeline=pipeline)
            assert torch.get_num_threads() == 2
            results.append((loss, torch.cat([p.grad.flatten() for p in trainer.rule.parameters()])))
        (loss, grad), (piped_loss, piped_grad) = results
        assert piped_loss == pytest.approx(loss, rel=1e-5)
        torch.testing.assert_close(piped_grad, grad, rtol=1e-4, atol=1e-7)
        assert grad.abs().sum() > 0
    finally:
        torch.set_num_threads(threads)


def test_pipeline_reraises_a_failed_backward():
    from gnnopt.training.pipeline import BackwardPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="does not require grad"):
            with BackwardPipeline("cpu") as backward:
                assert backward.enabled and torch.get_num_threads() == 1
                backward(torch.ones(()))  # no graph to back-propagate through
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_init_fine_tunes_a_saved_rule_and_options_must_match(tmp_path, data):
    """``--init`` starts from a saved rule (options not given take its values); an option
    given explicitly that differs from the saved rule's is refused."""
    base = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 1}, outer_steps=1, inner_steps=3,
                       eval_every=1, embedded=True, seed=1)
    meta_train(base, tmp_path / "base", data=data, progress=False)
    saved = _weights(load_rule(str(tmp_path / "base" / "best")))
    tune = TrainConfig(**{**base.to_dict(), "rule_config": {}, "init": str(tmp_path / "base" / "best")})
    tuned = MetaTrainer(tune, tmp_path / "tuned", data=data, progress=False)
    assert tuned.rule.config["hidden"] == 8
    assert all(torch.equal(v, saved[k]) for k, v in _weights(tuned.rule).items())
    clash = TrainConfig(**{**tune.to_dict(), "rule_config": {"hidden": 16}})
    with pytest.raises(ValueError, match="--init"):
        MetaTrainer(clash, tmp_path / "clash", data=data, progress=False)
    # the update form changes no weight: a fine-tune may set it
    form = TrainConfig(**{**tune.to_dict(), "rule_config": {"fan_in_power": 0.5, "graph_every": 5}})
    reformed = MetaTrainer(form, tmp_path / "form", data=data, progress=False)
    assert reformed.rule.config["fan_in_power"] == 0.5 and reformed.rule.config["hidden"] == 8
    assert all(torch.equal(v, saved[k]) for k, v in _weights(reformed.rule).items())


def test_train_only_meta_trains_the_named_modules_and_keeps_the_rest(tmp_path, data):
    """``--train-only head``: the head of a saved rule learns, every other saved weight stays
    exactly as loaded, and the saved meta-optimizer state resumes with the head alone."""
    base = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 1}, outer_steps=1, inner_steps=3,
                       eval_every=1, embedded=True, seed=1)
    meta_train(base, tmp_path / "base", data=data, progress=False)
    saved = _weights(load_rule(str(tmp_path / "base" / "best")))
    head = TrainConfig(**{**base.to_dict(), "init": str(tmp_path / "base" / "best"), "objective": "tbptt",
                          "unroll": 3, "outer_steps": 3, "lr": 1e-2, "train_only": "head"})
    meta_train(head, tmp_path / "head", data=data, progress=False)
    resumed = MetaTrainer(head, tmp_path / "head", data=data, progress=False)
    resumed.resume()  # the meta-optimizer's state holds the head's parameters only
    n_head = len(list(resumed.rule.head.parameters()))
    assert resumed.step == 3 and len(resumed.meta_opt.param_groups[0]["params"]) == n_head
    weights = _weights(resumed.rule)
    assert all(torch.equal(weights[k], v) for k, v in saved.items() if not k.startswith("head."))
    assert any(not torch.equal(weights[k], v) for k, v in saved.items() if k.startswith("head."))
    assert json.loads((tmp_path / "head" / "config.json").read_text())["training"]["train_only"] == "head"


@pytest.mark.parametrize("train_only, match", [("", "Invalid train_only"), ("gnn,,head", "Invalid train_only"),
                                               ("nope", "no parameters under nope")])
def test_train_only_rejects_names_that_select_nothing(tmp_path, data, train_only, match):
    with pytest.raises(ValueError, match=match):
        cfg = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 1}, embedded=True, train_only=train_only)
        MetaTrainer(cfg, tmp_path / "x", data=data, progress=False)


def _one_segment(rule, cfg, data, steps):
    """Run one ``steps``-step segment of a fresh d1 episode (seed 5) under ``cfg``; returns the
    reported meta-loss, the rule's flattened meta-gradient and the episode."""
    rule.zero_grad(set_to_none=True)
    ep = Episode.start(rule, make_optimizee(get_task("fmnist17-d1"), data, 5, rule.graph_options, "cpu"), 5, steps)
    loss = run_segment(rule, ep, cfg, steps, 1.0)
    return loss, torch.cat([p.grad.flatten() for p in rule.parameters()]), ep


def test_es_estimates_the_meta_gradient_that_back_propagation_computes(data):
    """``objective="es"`` estimates, without differentiating through the unroll, the gradient
    of the same meta-loss that second-order tbptt over the whole segment computes exactly."""
    torch.manual_seed(0)
    rule = FFRule(hidden=8, layers=1)
    exact_loss, exact, exact_ep = _one_segment(
        rule, TrainConfig(rule="ff", objective="tbptt", unroll=4, second_order=True), data, 4)
    es_loss, estimate, es_ep = _one_segment(
        rule, TrainConfig(rule="ff", objective="es", es_pairs=200, es_sigma=1e-2), data, 4)
    assert es_loss == pytest.approx(exact_loss, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(exact_ep.params, es_ep.params))  # same end state
    assert torch.nn.functional.cosine_similarity(exact, estimate, 0) > 0.85
    assert 0.7 < estimate.norm() / exact.norm() < 1.4
    with pytest.raises(ValueError, match="es_sigma"):
        TrainConfig(objective="es", es_sigma=0)
    with pytest.raises(ValueError, match="second_order"):
        TrainConfig(objective="es", second_order=True)


def test_episodes_tell_a_scale_module_their_progress(data):
    """Meta-training passes each inner step's place in its episode (``t`` of ``length``) to
    the rule, so a scale module's progress inputs get a meta-gradient."""
    torch.manual_seed(0)
    rule = FFRule(hidden=8, layers=1, scale_hidden=0)
    _one_segment(rule, TrainConfig(rule="ff", objective="tbptt", unroll=4), data, 4)
    grad = rule.scale.net[-1].weight.grad[0]
    assert grad[5] != 0 and grad[6] != 0  # t / T and "T known"


def test_es_tail_scores_the_runs_on_their_last_steps(data):
    """``es_tail``: the perturbed runs are scored on their last steps only. A tail as long as
    the segment is the default; a shorter one estimates another gradient, from the same draws,
    while the reported meta-loss (the unperturbed run over the whole segment) and the end
    state stay the same."""
    torch.manual_seed(0)
    rule = FFRule(hidden=8, layers=1)
    base = dict(rule="ff", objective="es", es_pairs=8, es_sigma=1e-2)
    loss, grad, ep = _one_segment(rule, TrainConfig(**base), data, 6)
    whole_loss, whole, _ = _one_segment(rule, TrainConfig(**base, es_tail=6), data, 6)
    tail_loss, tail, tail_ep = _one_segment(rule, TrainConfig(**base, es_tail=2), data, 6)
    assert whole_loss == loss and torch.equal(whole, grad)
    assert tail_loss == loss and all(torch.equal(a, b) for a, b in zip(ep.params, tail_ep.params))
    assert torch.isfinite(tail).all() and not torch.allclose(tail, grad)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="es_tail"):
            TrainConfig(objective="es", es_tail=bad)


@pytest.mark.parametrize("objective", ["greedy", "tbptt", "es"])
def test_graph_every_runs_the_graph_part_on_its_steps_only(tmp_path, data, objective, monkeypatch):
    """Meta-training with ``graph_every=K`` steps the rule as ``GNNOptimizer(graph_every=K)``
    does: the graph part on episode steps 0, K, 2K, ..., and it still learns the graph part."""
    from gnnopt.rules import PNARule

    calls = []
    real = PNARule.embed
    monkeypatch.setattr(PNARule, "embed", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    cfg = TrainConfig(rule="pna", rule_config={"hidden": 8, "layers": 1}, objective=objective, unroll=4,
                      inner_steps=7, outer_steps=1, eval_every=10, embedded=True, graph_every=3, es_pairs=1)
    trainer = MetaTrainer(cfg, tmp_path, data=data, progress=False)
    before = _weights(trainer.rule)
    trainer.outer_step()
    runs = 3 if objective != "es" else 3 * 3  # es: two perturbed runs and the plain one
    assert len(calls) == runs  # steps 0, 3 and 6 of 7
    after = _weights(trainer.rule)
    assert not torch.equal(before["layers.0.msg_out.weight"], after["layers.0.msg_out.weight"])
