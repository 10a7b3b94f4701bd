"""glibc's allocator told to serve TLS read buffers from the heap, not fresh mappings.

The event loop's TLS transport reads every record with ``SSLObject.read(256 KiB)``:
Python allocates a 256 KiB ``bytes``, OpenSSL fills a few bytes of it, and it is
shrunk to size. 256 KiB is above glibc's default mmap threshold (128 KiB), so each
read was an ``mmap``, an ``mremap`` and later a ``munmap``, plus page faults on the
fresh pages: ~13 µs of a ~15 µs small-record read, paid on every TLS read of a
ztunnel (once or twice per request, about once per new connection on each side).
A shrunk chunk never raises glibc's adaptive threshold, so this never settled.

With the mmap threshold at 512 KiB the buffer comes from the heap and the shrink
happens in place; the trim threshold at 1 MiB keeps the heap's top from being
given back and taken again on every read. The cost is at most ~1 MiB of heap kept
mapped. Allocators other than glibc's (no ``mallopt``) are left as they are.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_read_buffers_in_heap"]

log = logging.getLogger("ambient.malloctune")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 512 * 1024
TRIM_THRESHOLD = 1024 * 1024


def keep_read_buffers_in_heap() -> bool:
    """Tune glibc's thresholds (see the module docstring); False where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not done:
        log.debug("mallopt refused the mmap/trim thresholds; TLS reads keep mapping buffers")
    return done
