"""glibc malloc settings for a process that allocates and frees large buffers on every request.

A 1,000-record batch is a few hundred KiB of body, parser buffers and arrays. With glibc's
defaults, blocks that size are mmap'ed and handed back on free, or the heap top is trimmed
after them, so each request touches fresh pages: about 80 page faults per 320 KiB body, and
on the benchmark VM they were a third of the serving process's CPU per columnar batch
(bench/RESULTS.md, "Ingest over HTTP"). Raising the mmap and trim thresholds lets freed blocks
be reused. The cost is that up to ``TRIM_BYTES`` of freed memory may stay resident after a
burst of large requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("mlmon.malloc")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 * 1024 * 1024
"""Blocks below this come from the heap (glibc's ceiling for this setting on 64-bit)."""
TRIM_BYTES = 64 * 1024 * 1024
"""Free memory at the top of a heap that is kept rather than returned to the system."""

_done = False


def keep_freed_buffers() -> bool:
    """Apply the settings once per process; False where the C library is not glibc (musl, macOS)."""
    global _done
    if _done:
        return True
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("mallopt refused the thresholds; keeping glibc's defaults")
    _done = ok
    return ok
