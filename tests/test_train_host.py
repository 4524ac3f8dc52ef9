"""The host-side setting of training: freed host memory stays in the process."""

import os
import resource
import sys

import jax
import numpy as np
import pytest

from jaxbasics.train.host import retain_host_memory


def _page_faults_of_a_fresh_block() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(16 * 2**20, np.float32)  # 64 MB: glibc would mmap it afresh
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or jax.default_backend() != "cpu"
    or os.environ.get("JAXBASICS_RETAIN_HOST_MEMORY") == "0",
    reason="applies to Linux (glibc) on the CPU backend only, unless turned off",
)
def test_freed_host_memory_is_reused_without_page_faults():
    assert retain_host_memory() and retain_host_memory()  # once per process, idempotent
    _page_faults_of_a_fresh_block()  # the heap grows once
    # A fresh mmap faults the block in again: 16,384 faults in 4 kB pages, about 540 where the
    # kernel backs it with huge pages. Reused, it faults in none; other threads of the process
    # (a test runner's, XLA's) may fault in a few dozen of their own meanwhile.
    assert _page_faults_of_a_fresh_block() < 128
