"""CPU training without page-fault storms.

glibc's malloc returns large freed blocks to the kernel (``munmap``/trim), so a CPU
training loop faults every activation buffer in afresh on every step.
``benchmarks/bench_train_step.py`` measured 10-18k minor page faults per step for SiLU
(which keeps more activations alive than ReLU) and a 14-15% slower SiLU step because of
it; with freed memory kept in the heap the SiLU/ReLU ratio is 0.99-1.02, which is SAT's
"no extra compute" claim. :func:`keep_freed_memory` sets the two glibc thresholds that the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables would set.
``SAT_TOOLKIT_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

OPT_OUT_ENV_VAR = "SAT_TOOLKIT_MALLOC_TUNING"
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: larger blocks are still mapped and returned
_done = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; False where it is off or not glibc."""
    global _done
    if _done:
        return True
    if os.environ.get(OPT_OUT_ENV_VAR, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to tune
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
    return _done
