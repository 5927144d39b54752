"""Process-wide helpers of the command-line tools: the device they run on, and a setting that
makes many small CPU tensor ops faster.

A learned-optimizer step on CPU runs thousands of ops on tensors of a few hundred KiB to a
few MiB. glibc's malloc hands blocks above its mmap threshold back to the kernel on free,
so every such tensor costs fresh pages: on a task-17 meta-training step that is ~5,500 page
faults and ~10 ms of kernel time, more still when two threads fault at once
(:class:`gnnopt.training.trainer.BackwardPipeline`). :func:`keep_freed_memory` asks malloc
to keep those blocks for reuse instead. The command-line tools call it; a training loop of
your own can too. The cost is that the process keeps its peak heap instead of returning it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so freed tensor memory is reused, not unmapped.

    Returns whether the settings took effect (``False`` off Linux or without glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def check_device(name: str) -> torch.device:
    """``torch.device(name)`` for a device this machine has, else a ``ValueError`` in words
    (the command-line tools print it instead of a traceback)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Invalid --device {name!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: gnnopt runs on cpu, cuda or mps, not {device.type}")
    return device
