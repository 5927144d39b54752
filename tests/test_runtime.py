"""gnnopt.runtime: freed tensor memory is reused instead of faulted in again."""
from __future__ import annotations

import resource
import sys

import pytest
import torch

from gnnopt.runtime import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_tensor_memory_is_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("no glibc mallopt here")
    pages = (8 << 20) // resource.getpagesize()  # an 8 MiB tensor spans this many pages
    torch.ones(2 << 20)  # first touch of the heap outside the measurement
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(2 << 20)  # 8 MiB of float32, written, then freed
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # unmapped on free, each tensor would fault in all of its pages again (20 x 2,048)
    assert faults < 2 * pages, faults
