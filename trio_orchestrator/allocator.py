"""glibc's allocator, told to keep the output path's large, short-lived blocks in its heap.

A bot that floods its output is read in blocks of up to 256 KiB (``runner.READ_SIZE``),
and each block becomes two prefixed copies of a few hundred KiB that live for one write
(:class:`~trio_orchestrator.output.Printer`). glibc serves allocations from 128 KiB up
with ``mmap`` and hands the top of its heap back to the kernel once 128 KiB of it is free
(its dynamic thresholds move only a little), so every block was written into fresh pages:
in a flood, page faults and zeroing pages were a quarter of the manager's CPU, more than all
of its Python code (``perf`` of the manager, see benchmarks/README.md). With the thresholds
below, those blocks come from heap memory that is reused; the cost is up to
:data:`TRIM_THRESHOLD` of freed memory kept after a burst (idle RSS is unchanged).
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_blocks_in_heap"]

LOGGER = logging.getLogger(__name__)

# mallopt() parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above the largest block of the output path (a 256 KiB read with its prefixes) ...
MMAP_THRESHOLD = 1024 * 1024
# ... and room for the few of them alive at once.
TRIM_THRESHOLD = 4 * 1024 * 1024


def keep_blocks_in_heap() -> bool:
    """Raise glibc's mmap and trim thresholds; False where there is no glibc ``mallopt``
    (another libc keeps its defaults, which only costs CPU)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        return True
    LOGGER.debug("mallopt refused the thresholds; the allocator keeps its defaults")
    return False
