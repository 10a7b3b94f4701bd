"""Whether connecting to IP literals starts threads (uvloop's resolver pool) — run in a fresh process.

uvloop's ``sock_connect`` resolves even an IP literal on libuv's thread pool (threads,
a wake-up per connection); the mesh's connects (``ambient.sockconnect``) must not. The
check runs ``connects`` (lines of an ``async def`` body that may use ``port``, where a
listener accepts) in a new interpreter, whose thread count before and after must be 1.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = """
import asyncio, os, socket, uvloop
{imports}

async def main():
    listener = socket.create_server(("127.0.0.1", 0))  # connects complete in its backlog
    port = listener.getsockname()[1]
    before = len(os.listdir("/proc/self/task"))
{connects}
    print(before, len(os.listdir("/proc/self/task")))

uvloop.run(main())
"""


def assert_no_resolver_threads(imports: str, connects: str) -> None:
    """Run ``connects`` after ``imports`` under uvloop; fail if any thread started."""
    pytest.importorskip("uvloop")
    script = _SCRIPT.format(
        imports=textwrap.dedent(imports).strip(),
        connects=textwrap.indent(textwrap.dedent(connects).strip(), "    "),
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.split()
    assert before == after == "1"
