"""The CPU malloc tuning keeps freed buffers for reuse instead of faulting them in again."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from sat_toolkit.engine.memory import keep_freed_memory
print(keep_freed_memory())
faults = []
for _ in range(20):  # glibc settles after a few rounds
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = torch.ones(16 * 1024 * 1024)   # 64 MiB, like a batch of activations
    del buffer
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(max(faults[-3:]) if keep_freed_memory() else min(faults[-3:]))  # steady state
"""


def _probe(**env: str) -> tuple[str, int]:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=environ, check=True
    )
    enabled, faults = out.stdout.split()
    return enabled, int(faults)


@pytest.mark.skipif(sys.platform != "linux" or ctypes.util.find_library("c") is None, reason="glibc only")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    enabled, tuned_faults = _probe()
    disabled, default_faults = _probe(SAT_TOOLKIT_MALLOC_TUNING="0")
    assert (enabled, disabled) == ("True", "False")
    # 64 MiB is 16384 pages of 4 KiB: glibc's default maps and unmaps it every time.
    assert default_faults > 10_000
    assert tuned_faults < 100
