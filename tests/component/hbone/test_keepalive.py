"""PING keep-alive: answered PINGs keep a connection; an unanswered one closes it."""

from __future__ import annotations

import asyncio

from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.protocol import HboneSettings
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream

FAST = HboneSettings(ping_interval=0.05, ping_timeout=0.3)
# Pings every 50 ms, but a loaded machine may take a while to answer one: only the
# unanswered-ping test needs the short timeout.
PATIENT = HboneSettings(ping_interval=0.05, ping_timeout=10)


async def test_pings_are_answered_and_the_connection_stays(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    assert hbone_server.address is not None
    pool = ConnectionPool(settings=PATIENT)
    stream = await pool.open_stream(
        source=client_cert,
        destination=hbone_server.address,
        expected=[server_cert.identity],
        request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}")),
    )
    [(_, conn)] = pool.connections()
    async with asyncio.timeout(10):
        while conn.pings_acknowledged < 3:  # several keep-alive rounds, each answered
            stream.write(b"tick")
            assert await stream.read() == b"tick"
            await asyncio.sleep(PATIENT.ping_interval)
    assert not conn.closed
    assert [c for _, c in pool.connections()] == [conn]
    stream.reset()
    await pool.close()


async def test_an_unanswered_ping_closes_the_connection(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    assert hbone_server.address is not None and hbone_server.server is not None
    pool = ConnectionPool(settings=FAST)
    stream = await pool.open_stream(
        source=client_cert,
        destination=hbone_server.address,
        expected=[server_cert.identity],
        request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}")),
    )
    [(_, conn)] = pool.connections()
    silent = list(hbone_server.server.connections)
    for server_conn in silent:
        assert server_conn._transport is not None
        server_conn._transport.pause_reading()  # the peer goes silent, TCP stays up
    async with asyncio.timeout(5):
        await conn.done  # closed by its own keep-alive, nothing else
    assert conn.closed
    assert pool.connections() == []
    for server_conn in silent:
        assert server_conn._transport is not None
        server_conn._transport.resume_reading()  # let the server see the close
        await server_conn.done
    stream.reset()
    await pool.close()
