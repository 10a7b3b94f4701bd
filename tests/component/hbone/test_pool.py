"""The HBONE pool's rules: keying, 100 live streams per connection, idle close."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ambient.hbone.errors import HboneError
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.stream import HboneStream
from ambient.identity.ca import CertificateAuthority
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream
from tests.pki import issue


def _request(upstream: Upstream) -> ConnectRequest:
    return ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}"))


async def _open(
    pool: ConnectionPool,
    source: WorkloadCertificate,
    server: ForwardingServer,
    server_cert: WorkloadCertificate,
    upstream: Upstream,
) -> HboneStream:
    assert server.address is not None
    return await pool.open_stream(
        source=source,
        destination=server.address,
        expected=[server_cert.identity],
        request=_request(upstream),
    )


async def test_streams_share_a_connection_up_to_100(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool()
    streams = await asyncio.gather(
        *(_open(pool, client_cert, hbone_server, server_cert, upstream) for _ in range(150))
    )
    conns = [conn for _, conn in pool.connections()]
    assert len(conns) == 2
    assert sorted(len(c.streams) for c in conns) == [50, 100]
    # Closing streams frees room: the next stream reuses an existing connection.
    for stream in streams[:10]:
        stream.reset()
    await _open(pool, client_cert, hbone_server, server_cert, upstream)
    assert len(pool.connections()) == 2
    await pool.close()


async def test_different_source_identities_never_share(
    ca: CertificateAuthority,
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool()
    other = issue(ca, "shop", "probe")
    a = await _open(pool, client_cert, hbone_server, server_cert, upstream)
    b = await _open(pool, other, hbone_server, server_cert, upstream)
    assert len(pool.connections()) == 2
    keys = {key.source for key, _ in pool.connections()}
    assert keys == {client_cert.identity, other.identity}
    # The server saw each caller as itself.
    assert hbone_server.server is not None
    seen = {c.peer.identity for c in hbone_server.server.connections if c.peer}
    assert seen == {client_cert.identity, other.identity}
    a.reset()
    b.reset()
    await pool.close()


async def test_idle_connection_is_closed_after_the_timeout(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool(idle_timeout=0.2)
    stream = await _open(pool, client_cert, hbone_server, server_cert, upstream)
    [(_, conn)] = pool.connections()
    stream.write_eof()
    while await stream.read():
        pass
    async with asyncio.timeout(5):
        await conn.done  # closed by the idle timer, not by anything the test did
    assert pool.connections() == []
    # A new stream simply dials again.
    again = await _open(pool, client_cert, hbone_server, server_cert, upstream)
    again.reset()
    await pool.close()


async def test_busy_connection_is_not_idle(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool(idle_timeout=0.1)
    stream = await _open(pool, client_cert, hbone_server, server_cert, upstream)
    [(_, conn)] = pool.connections()
    for i in range(5):  # traffic well past the idle timeout on a stream that stays open
        stream.write(b"%d" % i)
        assert await stream.read() == b"%d" % i
        await asyncio.sleep(0.05)
    assert not conn.closed
    stream.reset()
    await pool.close()


async def test_unreachable_destinations_leave_nothing_behind(
    client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> None:
    """Failed dials to many addresses (pods gone, their addresses never back) keep no
    per-destination state in the pool."""
    pool = ConnectionPool(connect_timeout=2)
    for port in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))  # a port nobody listens on
        address = SocketAddress.parse(f"127.0.0.1:{probe.getsockname()[1]}")
        probe.close()
        with pytest.raises((HboneError, OSError)):
            await pool.open_stream(
                source=client_cert,
                destination=address,
                expected=[server_cert.identity],
                request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{8000 + port}")),
            )
    assert pool.connections() == []
    assert pool._locks == {}
    await pool.close()
