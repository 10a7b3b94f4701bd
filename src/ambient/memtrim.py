"""Handing the heap a burst freed back to the kernel (glibc's ``malloc_trim``).

glibc's ``malloc`` keeps freed memory in its arenas, and returns it on its own only
from the top of the heap: after a burst (a bulk transfer through a ztunnel buffers
megabytes per stream, up to the HBONE window), one small block still in use above
the freed ones pins all of it, and the process keeps that resident set for its
whole life. ``malloc_trim(0)`` releases every free page inside the heap as well
(``MADV_DONTNEED``; the blocks stay in malloc's free lists and fault back in when
reused).

:class:`HeapTrimmer` calls it every ``interval`` seconds, when malloc reports at
least ``threshold`` bytes free and something changed since the last trim — as
jemalloc's default decay (10 s) returns dirty pages. One trimmer per event loop,
shared by the ztunnels of a one-process mesh (:func:`trim_heap_periodically`).
Elsewhere than glibc (no ``malloc_trim``/``mallinfo2``) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import weakref
from collections.abc import Callable

__all__ = ["HeapTrimmer", "heap_free_bytes", "trim_heap_periodically"]

log = logging.getLogger("ambient.memtrim")

INTERVAL = 10.0  # seconds between checks
THRESHOLD = 1 << 20  # free bytes in malloc's arenas worth a trim


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> tuple[Callable[[], _MallInfo2], Callable[[int], int]] | None:
    try:
        libc = ctypes.CDLL(None)
        mallinfo2, malloc_trim = libc.mallinfo2, libc.malloc_trim  # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    malloc_trim.restype = ctypes.c_int
    malloc_trim.argtypes = [ctypes.c_size_t]
    return mallinfo2, malloc_trim


_LIBC = _libc()


def heap_free_bytes() -> int | None:
    """Bytes free in malloc's arenas (None without glibc)."""
    if _LIBC is None:
        return None
    return int(_LIBC[0]().fordblks)


class HeapTrimmer:
    """Trims the heap every ``interval`` seconds if ``threshold`` bytes or more are free
    and the arenas changed since the last trim (see the module docstring)."""

    def __init__(self, *, interval: float = INTERVAL, threshold: int = THRESHOLD) -> None:
        self.interval = interval
        self.threshold = threshold
        self.trims = 0
        self._last: tuple[int, int] | None = None  # (arena, free) after the last trim
        self._timer: asyncio.TimerHandle | None = None

    def check(self) -> bool:
        """One check (what each tick does); whether it trimmed."""
        if _LIBC is None:
            return False
        info = _LIBC[0]()
        if info.fordblks < self.threshold or (info.arena, info.fordblks) == self._last:
            return False
        _LIBC[1](0)
        self.trims += 1
        after = _LIBC[0]()
        self._last = (after.arena, after.fordblks)
        return True

    def start(self) -> None:
        """Check every ``interval`` seconds on the running loop until :meth:`close`."""
        if _LIBC is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        try:
            self.check()
        except Exception:  # pragma: no cover - ctypes on a libc that lied about itself
            log.exception("trimming the heap failed; not trying again")
            self._timer = None
            return
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# Weakly: a loop closed without its ztunnels closing is not kept alive by its trimmer.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[HeapTrimmer, list[object]]] = (
    weakref.WeakKeyDictionary()
)


def trim_heap_periodically() -> Callable[[], None]:
    """Start this loop's trimmer (or join it); returns the function that leaves it
    (the last one to leave stops it)."""
    loop = asyncio.get_running_loop()
    if loop not in _SHARED:
        trimmer = HeapTrimmer()
        trimmer.start()
        _SHARED[loop] = (trimmer, [])
    trimmer, users = _SHARED[loop]
    token = object()
    users.append(token)

    def leave() -> None:
        if token in users:
            users.remove(token)
            if not users:
                trimmer.close()
                _SHARED.pop(loop, None)

    return leave
