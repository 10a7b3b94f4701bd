"""``ambient.memtrim``: the heap a burst freed goes back to the kernel, once per change.

Each check runs in a fresh interpreter, whose heap is laid out the same way every
time: 200 blocks of 64 KiB (below malloc's mmap threshold, so inside the heap),
written to, then a small block above them that stays in use, then the 200 freed.
glibc cannot give those 12.5 MiB back from the top of the heap, which the small
block pins; a trim releases them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from ambient import memtrim

pytestmark = pytest.mark.skipif(
    memtrim.heap_free_bytes() is None, reason="needs glibc's mallinfo2 and malloc_trim"
)

BURST = """
import ctypes, json, sys
from ambient import memtrim

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def resident_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

blocks = [libc.malloc(64 << 10) for _ in range(200)]
for block in blocks:
    libc.memset(block, 1, 64 << 10)
pin = libc.malloc(64)
for block in blocks:
    libc.free(block)
trimmer = memtrim.HeapTrimmer()
freed = resident_kib()
first = trimmer.check()
trimmed = resident_kib()
second = trimmer.check()  # nothing changed since: no second trim
print(json.dumps({"freed": freed, "trimmed": trimmed, "first": first, "second": second,
                  "trims": trimmer.trims}))
"""


def test_a_trim_gives_back_the_freed_heap_once() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BURST], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["first"] is True and got["second"] is False and got["trims"] == 1
    # 12.5 MiB were freed inside the heap; at least 8 MiB of it leaves the resident set.
    assert got["freed"] - got["trimmed"] >= 8 * 1024, got


def test_a_quiet_heap_is_not_trimmed() -> None:
    trimmer = memtrim.HeapTrimmer(threshold=1 << 40)  # never that much free
    assert trimmer.check() is False and trimmer.trims == 0


def test_the_ztunnels_of_one_loop_share_one_trimmer() -> None:
    async def main() -> tuple[int, int, int]:
        leave_a = memtrim.trim_heap_periodically()
        leave_b = memtrim.trim_heap_periodically()
        both = len(memtrim._SHARED)
        leave_a()
        one = len(memtrim._SHARED)
        leave_b()
        leave_b()  # leaving twice is harmless
        return both, one, len(memtrim._SHARED)

    assert asyncio.run(main()) == (1, 1, 0)
