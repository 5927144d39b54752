"""Checkpoints: save/load round trips, bundled names, the Hub cache, and clear failures."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import small_cnn
from gnnopt import GNNOptimizer, list_pretrained
from gnnopt.hub import bundled_dirs
from gnnopt.rules import load_rule
from gnnopt.rules import create


def test_save_and_load_round_trip(tmp_path, rule_name):
    rule = create(rule_name, hidden=16) if rule_name != "rt" else create("rt", hidden=16, heads=2)
    rule.save_pretrained(tmp_path / "ckpt")
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert files == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["rule"] == rule.name and meta["config"] == rule.config
    loaded = load_rule(tmp_path / "ckpt")
    assert type(loaded) is type(rule) and loaded.config == rule.config
    for (k, a), (_, b) in zip(rule.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    opt = GNNOptimizer.from_pretrained(str(tmp_path / "ckpt"), small_cnn().named_parameters(), lr=0.5)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.rule.config == rule.config


def test_list_pretrained_lists_only_real_checkpoints():
    names = list_pretrained()
    for name in names:
        d = next(root / name for root in bundled_dirs() if (root / name).is_dir())
        assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
        rule = load_rule(name)  # every listed name loads
        assert rule.name in ("ff", "lstm", "pna", "rt", "pna_lstm")


def test_hub_repo_id_loads_from_the_cache_offline(tmp_path, monkeypatch):
    """A Hub repo id resolves through huggingface_hub's cache with HF_HUB_OFFLINE=1."""
    rule = create("ff")
    repo = tmp_path / "cache" / "models--someone--ff-test"
    rev = "0123456789abcdef0123456789abcdef01234567"
    rule.save_pretrained(repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_rule("someone/ff-test", cache_dir=tmp_path / "cache", local_files_only=True)
    assert torch.equal(loaded.head.net[0].weight, rule.head.net[0].weight)
    with pytest.raises(FileNotFoundError, match="someone/missing"):
        load_rule("someone/missing", cache_dir=tmp_path / "cache", local_files_only=True)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-name"):
        load_rule("no-such-name")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_rule(tmp_path / "empty")
    create("ff").save_pretrained(tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_rule(tmp_path / "noweights")


def test_corrupted_and_mismatched_checkpoints(tmp_path):
    good = tmp_path / "good"
    create("ff").save_pretrained(good)

    bad_json = tmp_path / "bad_json"
    shutil.copytree(good, bad_json)
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad_json/config.json"):
        load_rule(bad_json)

    truncated = tmp_path / "truncated"
    shutil.copytree(good, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated/model.safetensors.*corrupted"):
        load_rule(truncated)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(good, mismatched)
    meta = json.loads((mismatched / "config.json").read_text())
    meta["config"]["hidden"] = 32
    (mismatched / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"mismatched/model.safetensors.*wrong shape"):
        load_rule(mismatched)

    wrong_rule = tmp_path / "wrong_rule"
    shutil.copytree(good, wrong_rule)
    meta = json.loads((wrong_rule / "config.json").read_text())
    meta["rule"] = "pna"
    meta["config"] = {}
    (wrong_rule / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match"):
        load_rule(wrong_rule)


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["GNNOPT_PICKLE_CANARY"]),))


def test_checkpoints_are_never_unpickled(tmp_path, monkeypatch):
    canary = tmp_path / "unpickled"
    monkeypatch.setenv("GNNOPT_PICKLE_CANARY", str(canary))
    ckpt = tmp_path / "evil"
    create("ff").save_pretrained(ckpt)
    (ckpt / "model.safetensors").write_bytes(pickle.dumps({"w": _Boom()}))
    torch.save({"w": _Boom()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="safetensors"):
        load_rule(ckpt)
    assert not canary.exists()


def test_safetensors_with_extra_tensor_is_rejected(tmp_path):
    ckpt = tmp_path / "extra"
    rule = create("ff")
    rule.save_pretrained(ckpt)
    tensors = {k: v.contiguous() for k, v in rule.state_dict().items()}
    tensors["intruder"] = torch.zeros(2)
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(ValueError, match="unexpected"):
        load_rule(ckpt)


def test_non_finite_weights_are_refused(tmp_path):
    rule = create("ff")
    with torch.no_grad():
        rule.head.net[0].weight[0, 0] = float("nan")
    rule.save_pretrained(tmp_path / "nan")
    with pytest.raises(ValueError, match="non-finite weights in head.net.0.weight"):
        load_rule(tmp_path / "nan")


@pytest.mark.parametrize("field, value, match", [("format", "other-format", "format 'other-format'"),
                                                 ("format", None, "format None"),
                                                 ("gnnopt_version", "99.0.0", "newer than this gnnopt"),
                                                 ("gnnopt_version", "x.y", "invalid gnnopt_version")])
def test_config_format_and_version_are_checked(tmp_path, field, value, match):
    create("ff").save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    meta = json.loads(path.read_text())
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        load_rule(tmp_path / "ckpt")


def test_a_local_folder_wins_over_a_bundled_name(tmp_path, monkeypatch):
    name = list_pretrained()[0]
    create("ff").save_pretrained(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="both a local directory and a bundled checkpoint"):
        assert load_rule(name).name == "ff"


def test_a_missing_local_path_is_not_reported_as_a_hub_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="runs/pna: not a checkpoint directory"):
        load_rule("runs/pna")  # looks like owner/name, but runs/ is a local folder


def test_from_pretrained_on_a_rule_class_checks_the_kind(tmp_path):
    from gnnopt.rules import FFRule, PNARule

    create("ff").save_pretrained(tmp_path / "ff")
    assert type(FFRule.from_pretrained(tmp_path / "ff")) is FFRule
    with pytest.raises(ValueError, match="holds a 'ff' rule, not a 'pna' rule"):
        PNARule.from_pretrained(tmp_path / "ff")
