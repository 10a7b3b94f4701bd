"""The admin/metrics HTTP server under a flood of idle connections: its descriptors stay bounded
and a scrape still works."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

from ambient.httpd import AdminServer, Response

IDLE = 200


async def test_idle_connections_beyond_the_cap_are_closed_and_scrapes_work() -> None:
    server = AdminServer({"/metrics": lambda _r: Response(200, b"metrics\n")})
    host, port = await server.start("127.0.0.1", 0)
    idle = [await asyncio.open_connection(host, port) for _ in range(IDLE)]
    try:

        async def closed_by_server(reader: asyncio.StreamReader) -> bool:
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(5):  # the server's own idle timeout is 30 s
                    return await reader.read() == b""
            return False

        # The oldest made room for the newer: only max_connections are left open.
        oldest = idle[: IDLE - server.max_connections]
        closed = await asyncio.gather(*(closed_by_server(r) for r, _ in oldest))
        assert all(closed), f"{closed.count(False)} of the oldest still open"
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            reply = await reader.read()
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"metrics\n"), reply
        writer.close()
    finally:
        for _, w in idle:
            w.close()
        await server.close()


SHUTDOWN_WITH_A_LONG_POLL = """
import asyncio, logging
from ambient.httpd import AdminServer, Response

logging.basicConfig(level=logging.INFO)

async def main() -> None:
    entered = asyncio.Event()

    async def long_poll(_request):
        entered.set()
        await asyncio.Event().wait()  # answered only on a change that never comes
        return Response(200, b"")

    server = AdminServer({"/pods": long_poll})
    host, port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /pods HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n")
    await entered.wait()
    # returning now: asyncio.run cancels the request's task, as a process stopping does

asyncio.run(main())
print("done")
"""


def test_a_pending_request_at_shutdown_logs_no_traceback() -> None:
    """A long poll still open when the process stops (ztunnel's /pods on the node agent's
    socket): the loop cancels its task, and that is not an error."""
    done = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_WITH_A_LONG_POLL],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "Traceback" not in done.stderr and "Exception in callback" not in done.stderr, (
        done.stderr
    )
