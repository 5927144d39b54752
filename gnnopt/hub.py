"""Checkpoints: ``config.json`` + ``model.safetensors`` (+ ``README.md``), bundled or on the Hub.

A bundled checkpoint, a local directory and a Hugging Face Hub model repo share one layout.
Weights are only ever read with safetensors: nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .rules import UpdateRule, get_rule_class

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT = "gnnopt-rule"


def bundled_dirs() -> list[Path]:
    """Where bundled checkpoints live: inside the installed package, or the source checkout."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "pretrained", here.parent / "pretrained") if d.is_dir()]


def list_pretrained() -> list[str]:
    """Names of the bundled checkpoints whose files are really present."""
    names = set()
    for root in bundled_dirs():
        for d in root.iterdir():
            if (d / CONFIG_NAME).is_file() and (d / WEIGHTS_NAME).is_file():
                names.add(d.name)
    return sorted(names)


def _bundled(name: str) -> Path | None:
    for root in bundled_dirs():
        d = root / name
        if (d / CONFIG_NAME).is_file():
            return d
    return None


def load_rule(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> UpdateRule:
    """Load a rule from a bundled name, a local directory or a Hub repo id."""
    text = os.fspath(name_or_path)
    bundled = _bundled(text) if "/" not in text and os.sep not in text else None
    if bundled is not None:
        return load_rule_from_dir(bundled)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_rule_from_dir(path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{text}: not a checkpoint directory (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    if "/" not in text:
        raise FileNotFoundError(
            f"'{text}' is neither a bundled checkpoint ({', '.join(list_pretrained()) or 'none bundled'}), "
            "a local directory, nor a Hub repo id of the form 'owner/name'"
        )
    return load_rule_from_dir(_download(text, revision, cache_dir, local_files_only))


def _download(repo_id: str, revision, cache_dir, local_files_only) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
        )
    except Exception as err:  # offline, missing repo, auth: say which and how to fix it
        raise FileNotFoundError(
            f"could not fetch checkpoint '{repo_id}' from the Hugging Face Hub ({type(err).__name__}: {err}). "
            "Offline, it must already be in the cache (HF_HUB_OFFLINE=1 / local_files_only=True)."
        ) from err
    return Path(folder)


def load_rule_from_dir(directory: str | os.PathLike) -> UpdateRule:
    """Rebuild a rule from ``config.json`` and load ``model.safetensors`` strictly."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing checkpoint config")
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: missing checkpoint weights")
    try:
        meta = json.loads(config_path.read_text())
        name, config = meta["rule"], meta["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{config_path}: not a gnnopt rule config ({type(err).__name__}: {err})") from err
    try:
        rule = get_rule_class(name)(**config)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{config_path}: {err}") from err
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_path}: corrupted or not a safetensors file ({err})") from err
    expected = rule.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{weights_path}: weights do not match the '{name}' rule of {config_path.name} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]})"
        )
    rule.load_state_dict(tensors)
    rule.eval()
    return rule


def save_rule(rule: UpdateRule, directory: str | os.PathLike, *, model_card: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
    """Write a checkpoint directory; each file is written atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "gnnopt_version": __version__, "rule": rule.name, "config": rule.config}
    if extra:
        meta.update(extra)
    _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in rule.state_dict().items()}
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    card = model_card if model_card is not None else _default_card(rule)
    _atomic_write(directory / CARD_NAME, lambda p: Path(p).write_text(card))


def push_rule_to_hub(rule: UpdateRule, repo_id: str, *, model_card: str | None = None, **kwargs: Any) -> str:
    """Save to a temporary folder and upload it; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=kwargs.pop("token", None))
    api.create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None))
    with tempfile.TemporaryDirectory() as tmp:
        save_rule(rule, tmp, model_card=model_card)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, **kwargs)
    return str(info)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _default_card(rule: UpdateRule) -> str:
    params = sum(p.numel() for p in rule.parameters())
    return (
        f"---\nlibrary_name: gnnopt\ntags: [learned-optimizer, gnnopt]\n---\n\n"
        f"# gnnopt rule `{rule.name}`\n\n{params:,} weights; config:\n\n```json\n"
        f"{json.dumps(rule.config, indent=2)}\n```\n\n"
        "Load with `GNNOptimizer.from_pretrained(path_or_repo_id, model.named_parameters())`.\n"
        "No evaluation is claimed by this card.\n"
    )
