"""Checkpoint files: ``config.json`` + ``model.safetensors`` (+ ``README.md``), bundled or on the Hub.

A bundled checkpoint, a local directory and a Hugging Face Hub model repo share one layout.
This module only finds, reads and writes those files; it knows nothing of rule classes
(:meth:`gnnopt.rules.UpdateRule.from_pretrained` builds a rule from what it reads).
Weights are only ever read with safetensors: nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ._version import __version__

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


def resolve(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """The directory holding a checkpoint: a local directory, a bundled name, or a Hub repo
    id (downloaded into the Hub cache). A local directory wins over a bundled name."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    bundled = _bundled(text) if "/" not in text and os.sep not in text else None
    if path.is_dir():
        if bundled is not None and path.resolve() != bundled.resolve():
            warnings.warn(f"'{text}' is both a local directory and a bundled checkpoint: using the local "
                          f"directory (pass gnnopt's {bundled} to use the bundled one)", UserWarning, stacklevel=3)
        return path
    if bundled is not None:
        return bundled
    looks_local = path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or (
        "/" in text and Path(text.split("/")[0]).is_dir())
    if looks_local:
        raise FileNotFoundError(f"{text}: not a checkpoint directory (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    if "/" not in text:
        raise FileNotFoundError(
            f"'{text}' is neither a bundled checkpoint ({', '.join(list_pretrained()) or 'none bundled'}), "
            "a local directory, nor a Hub repo id of the form 'owner/name'"
        )
    return _download(text, revision, cache_dir, local_files_only)


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
            f"'{repo_id}' is not a local directory, and fetching it as a Hugging Face Hub repo failed "
            f"({type(err).__name__}: {err}). Offline, it must already be in the cache "
            "(HF_HUB_OFFLINE=1 / local_files_only=True)."
        ) from err
    return Path(folder)


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config.json as a dict, weights)`` of a checkpoint directory, checked: the format
    is gnnopt's, written by this or an older gnnopt version, and every weight is finite."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing checkpoint config")
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: missing checkpoint weights")
    try:
        meta = json.loads(config_path.read_text())
        if not isinstance(meta["rule"], str) or not isinstance(meta["config"], dict):
            raise TypeError("'rule' must be a name and 'config' an object")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{config_path}: not a gnnopt rule config ({type(err).__name__}: {err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    written = str(meta.get("gnnopt_version", ""))
    if _version_tuple(written) is None:
        raise ValueError(f"{config_path}: invalid gnnopt_version {written!r}")
    if _version_tuple(written)[:2] > _version_tuple(__version__)[:2]:
        raise ValueError(f"{config_path}: written by gnnopt {written}, newer than this gnnopt {__version__}; "
                         "upgrade gnnopt to load it")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_path}: corrupted or not a safetensors file ({err})") from err
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise ValueError(f"{weights_path}: non-finite weights in {', '.join(bad[:5])}")
    return meta, tensors


def _version_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return None


def write_checkpoint(directory: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, Tensor],
                     card: str) -> None:
    """Write a checkpoint directory; each file is written atomically (temp file + rename).
    ``meta`` (``rule`` and ``config``, plus anything JSON-able) gets the format and version."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "gnnopt_version": __version__, **meta}
    text = json.dumps(meta, indent=2) + "\n"  # fails here, before any file is touched, if not JSON-able
    atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(text))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    atomic_write(directory / CARD_NAME, lambda p: Path(p).write_text(card))


def push_folder(repo_id: str, write: Callable[[Path], None], **kwargs: Any) -> str:
    """Write a checkpoint with ``write(folder)`` into a temporary folder and upload it to a
    Hub model repo (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=kwargs.pop("token", None))
    api.create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None))
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, **kwargs)
    return str(info)


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
