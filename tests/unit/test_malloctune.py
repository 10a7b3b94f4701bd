"""glibc keeps a read buffer of 256 KiB, shrunk to its few bytes, in the heap once tuned:
the pattern of every TLS read (``SSLObject.read(256 KiB)``), here with ``os.read``."""

from __future__ import annotations

import subprocess
import sys

import pytest

_READS = """
import os, resource, sys
from ambient.malloctune import keep_read_buffers_in_heap
if sys.argv[1] == "tuned":
    assert keep_read_buffers_in_heap()
r, w = os.pipe()
def reads(n):
    for _ in range(n):
        os.write(w, b"0123456789")
        assert os.read(r, 262144) == b"0123456789"  # 256 KiB allocated, shrunk to 10 bytes
reads(50)  # warm: the heap grows once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
reads(500)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _READS, mode], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_read_buffers_come_from_the_heap_once_tuned() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt: Linux only")
    if _faults("plain") < 500:  # glibc maps each 256 KiB buffer afresh: the premise
        pytest.skip("this allocator does not map a fresh 256 KiB buffer per read")
    assert _faults("tuned") < 50
