"""Keep freed memory in the process for evaluation's large, short-lived tensors (glibc).

An evaluation batch (256 rows of up to 128 tokens) makes activations and KV-cache buffers of
several MB each, freed a moment later. By default glibc hands such blocks back to the
kernel (mmap above a threshold that starts at 128 KB, heap trimming above twice that), so
the next batch page-faults its memory in again, and forward passes and KV-cache prefills
run measurably slower (measured: docs/LOG.md). Raising the thresholds keeps the memory for
reuse. Training calls it too since its CPU attention keeps each layer's probabilities for
the backward pass (scaling/cpu_attention.py; training steps are faster with it too,
measured: docs/LOG.md). Called by `scaling train` (and so every sweep run), `scaling eval`,
`scaling lm-eval` and the three benchmarks in bench/.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

# glibc refuses mmap thresholds above half its heap size, 32 MiB on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30  # freed memory kept up to 1 GiB (evaluation peaks well below)
TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed blocks for reuse; True if it took the settings.

    A no-op returning False off Linux or with another C library (musl has no mallopt):
    evaluation is then as correct and a little slower.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all([mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1,
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1,
                mallopt(M_TOP_PAD, TOP_PAD) == 1])
