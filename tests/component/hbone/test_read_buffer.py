"""HBONE reads into one shared buffer: no large allocation per read, nothing aliased.

``HboneTransport`` is a buffered protocol: the TLS layer decrypts into a read
buffer shared by every connection of the thread, and only what is kept (tunnel
payloads, partial frames) is copied out. These tests run the real client and
server over TLS on loopback, on asyncio's loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from ambient.hbone import connection
from ambient.hbone.messages import ConnectRequest
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.protocol import Side
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream, read_all

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop_name: str, main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(main(), 60))


async def _setup(
    client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> tuple[ForwardingServer, Upstream, ConnectRequest]:
    server = ForwardingServer(lambda: server_cert)
    await server.start()
    app = Upstream()
    return server, app, ConnectRequest(await app.start())


async def _open(
    pool: ConnectionPool,
    cert: WorkloadCertificate,
    server: ForwardingServer,
    server_cert: WorkloadCertificate,
    request: ConnectRequest,
) -> HboneStream:
    assert server.address is not None
    return await pool.open_stream(
        source=cert, destination=server.address, expected=[server_cert.identity], request=request
    )


def test_small_exchanges_allocate_no_read_sized_buffers(
    client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> None:
    """A 1 KiB echo exchange costs no 256 KiB allocation per TLS read (as a plain
    protocol's ``bytes`` per decrypted read did: the peak then exceeds 256 KiB). On
    uvloop: asyncio's own plain TCP transports (the echo app's, the relay's) allocate
    256 KiB per read themselves."""

    async def main() -> None:
        server, app, request = await _setup(client_cert, server_cert)
        pool = ConnectionPool()
        try:
            await exchanges(pool, server, request)
        finally:
            await pool.close()
            await server.close()
            await app.close()

    async def exchanges(
        pool: ConnectionPool, server: ForwardingServer, request: ConnectRequest
    ) -> None:
        stream = await _open(pool, client_cert, server, server_cert, request)
        message = b"m" * 1024
        stream.write(message)  # warm up: connections, contexts, the shared read buffer
        assert await stream.read() == message
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(50):
                stream.write(message)
                got = b""
                while len(got) < len(message):
                    got += await stream.read()
                assert got == message
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert peak < 128 * 1024, f"peak {peak} bytes above the start over 50 small exchanges"

    run("uvloop", main)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_concurrent_connections_keep_their_bytes(
    loop_name: str, client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> None:
    """Four connections (one per pool) echo different 2 MiB payloads at once through
    the same server process: every byte comes back to its own stream, in order."""

    async def main() -> None:
        server, app, request = await _setup(client_cert, server_cert)
        pools = [ConnectionPool() for _ in range(4)]

        async def one(i: int, pool: ConnectionPool) -> None:
            stream = await _open(pool, client_cert, server, server_cert, request)
            payload = hashlib.sha256(bytes([i])).digest() * (2 * 1024 * 1024 // 32)
            for start in range(0, len(payload), 100_000):
                stream.write(payload[start : start + 100_000])
                await stream.drain()
            stream.write_eof()
            got = await read_all(stream)
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()

        try:
            await asyncio.gather(*(one(i, pool) for i, pool in enumerate(pools)))
        finally:
            for pool in pools:
                await pool.close()
            await server.close()
            await app.close()

    run(loop_name, main)


async def test_a_read_during_another_connections_read_gets_its_own_buffer() -> None:
    """Re-entry (a connection asked for a buffer while another one's read is being
    processed) gets a private buffer, never the shared one in use."""
    first = connection.HboneTransport(Side.CLIENT)
    second = connection.HboneTransport(Side.CLIENT)
    seen: list[bool] = []
    shared = first.get_buffer(100)

    def reenter(data: bytes | memoryview) -> None:
        seen.append(second.get_buffer(100) is shared)

    first.data_received = reenter  # type: ignore[method-assign]
    first.buffer_updated(10)
    assert seen == [False]
    assert second.get_buffer(100) is shared  # free again once the first read was handled
