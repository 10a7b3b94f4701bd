"""An HBONE server under HTTP/2 abuse, over real TLS: a raw attacker (hyperframe, not our
client) holding a valid mesh certificate, and a legitimate client beside it.

Every wait is bounded by a timeout that only a broken server reaches.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ambient.hbone.connection import HboneTransport
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.protocol import HboneSettings
from ambient.http2.guard import FloodLimits
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream
from tests.h2attack import ENHANCE_YOUR_CALM, RawH2

PAIRS = 5000


async def legit_echo(
    client_cert: WorkloadCertificate,
    server: ForwardingServer,
    server_cert: WorkloadCertificate,
    upstream: Upstream,
) -> bytes:
    """One tunnel from a well-behaved client on its own connection: what it echoes back."""
    assert server.address is not None
    pool = ConnectionPool()
    try:
        async with asyncio.timeout(20):
            stream = await pool.open_stream(
                source=client_cert,
                destination=server.address,
                expected=[server_cert.identity],
                request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}")),
            )
            stream.write(b"still here")
            stream.write_eof()
            chunks = []
            while data := await stream.read():
                chunks.append(data)
            return b"".join(chunks)
    finally:
        await pool.close()


async def attacker(
    client_cert: WorkloadCertificate, server: ForwardingServer, rcvbuf: int | None = None
) -> RawH2:
    assert server.address is not None
    raw = await RawH2.connect(
        str(server.address.ip), server.address.port, client_cert, rcvbuf=rcvbuf
    )
    async with asyncio.timeout(10):
        first = await raw.read_frame()  # the server's SETTINGS: it has attached the connection
    assert first is not None and first.type == 0x4
    return raw


def only_connection(server: ForwardingServer) -> HboneTransport:
    assert server.server is not None
    (conn,) = server.server.connections
    return conn


async def test_rapid_reset_dials_nothing_and_gets_goaway(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    """5,000 CONNECT+RST_STREAM pairs in one write: the server answers GOAWAY
    ENHANCE_YOUR_CALM, dials the application for (almost) none of them, and a
    legitimate tunnel opened meanwhile works."""
    raw = await attacker(client_cert, hbone_server)
    for sid in range(1, 2 * PAIRS, 2):
        raw.connect_headers(sid, f"127.0.0.1:{upstream.port}")
        raw.rst(sid)
    raw.write_nowait()
    legit = asyncio.ensure_future(legit_echo(client_cert, hbone_server, server_cert, upstream))
    async with asyncio.timeout(30):
        goaway = await raw.goaway()
    assert goaway is not None, "the server never sent GOAWAY"
    assert goaway.goaway_code == ENHANCE_YOUR_CALM
    assert b"rapid reset" in goaway.payload[8:]
    assert await legit == b"still here"
    raw.close()
    assert hbone_server.server is not None
    async with asyncio.timeout(10):  # every handler has finished (or was cancelled)
        while hbone_server.server._tasks:
            await asyncio.gather(*hbone_server.server._tasks, return_exceptions=True)
    # Dials only where a TLS read ended between a CONNECT and its reset (and were then
    # aborted): a handful, against one per pair without the defence.
    assert upstream.connections - 1 < 50, upstream.connections


async def test_a_reset_cancels_the_dial_under_way(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    upstream: Upstream,
) -> None:
    """A CONNECT whose handler is waiting on its dial is reset: the handler is cancelled
    and the application's connection is closed without a byte."""
    dial_started = asyncio.Event()
    release = asyncio.Event()
    cancelled = asyncio.Event()

    class SlowPolicyServer(ForwardingServer):
        async def _handle(self, stream):  # type: ignore[no-untyped-def]
            dial_started.set()
            try:
                await release.wait()  # a dial that takes long (a slow application)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            await super()._handle(stream)

    server = SlowPolicyServer(lambda: server_cert)
    await server.start()
    raw = await attacker(client_cert, server)
    raw.connect_headers(1, f"127.0.0.1:{upstream.port}")
    await raw.flush()
    async with asyncio.timeout(10):
        await dial_started.wait()
    raw.rst(1)
    await raw.flush()
    async with asyncio.timeout(10):
        await cancelled.wait()
    release.set()
    assert upstream.connections == 0
    raw.close()
    await server.close()


async def test_header_block_past_the_limit_is_refused_before_its_payload(
    client_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    """HEADERS without END_HEADERS, then a CONTINUATION announcing 1 MiB: GOAWAY comes
    back on the frame header alone, so nothing of it is ever buffered."""
    raw = await attacker(client_cert, hbone_server)
    block = raw.header_block([(":method", "CONNECT"), (":authority", f"127.0.0.1:{upstream.port}")])
    raw.headers_without_end(1, block)
    raw.raw((1024 * 1024).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big"))
    raw.raw(b"x" * 1000)  # the first bytes of the payload; the rest never comes
    await raw.flush()
    async with asyncio.timeout(10):
        goaway = await raw.goaway()
    assert goaway is not None and goaway.goaway_code == ENHANCE_YOUR_CALM
    assert b"header list size" in goaway.payload[8:]
    raw.close()


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_control_flood_gets_goaway_and_a_legit_tunnel_works(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
    kind: str,
) -> None:
    raw = await attacker(client_cert, hbone_server)
    for _ in range(20000):
        raw.ping() if kind == "ping" else raw.settings({4: 70000})
    raw.write_nowait()
    legit = asyncio.ensure_future(legit_echo(client_cert, hbone_server, server_cert, upstream))
    async with asyncio.timeout(30):
        goaway = await raw.goaway()
    assert goaway is not None and goaway.goaway_code == ENHANCE_YOUR_CALM
    assert await legit == b"still here"
    raw.close()


async def test_reading_stops_while_replies_back_up(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    upstream: Upstream,
) -> None:
    """Budgets out of the way (so no GOAWAY), a peer floods PINGs and never reads:
    the server stops reading once its output backs up, and so its output stays small.
    When the attacker goes, the connection and everything it held go too."""
    lenient = HboneSettings(
        limits=FloodLimits(control_burst=10**9, control_rate=10**9), ping_interval=0
    )
    server = ForwardingServer(lambda: server_cert, settings=lenient)
    await server.start()
    raw = await attacker(client_cert, server, rcvbuf=4096)
    conn = only_connection(server)
    raw.ping()
    batch = raw.take() * 1000  # 17 kB of PINGs
    stalled = False
    for _ in range(2000):  # at most 34 MB offered
        raw.writer.write(batch)
        if not conn.reading:
            stalled = True
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await raw.writer.drain()
    assert stalled, "the server kept reading though nobody read its replies"
    assert conn._transport is not None
    backlog = conn._transport.get_write_buffer_size()
    assert backlog < 1024 * 1024, backlog  # without the pause: tens of MB
    raw.close()
    async with asyncio.timeout(10):
        await conn.done
    assert not server.server.connections  # type: ignore[union-attr]
    await server.close()
