"""HBONE client and server over real TLS on loopback: tunnels, statuses, half-close, teardown."""

from __future__ import annotations

import asyncio

import pytest

from ambient.hbone.errors import StreamRefused, StreamReset
from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream, read_all


async def open_via(
    pool: ConnectionPool,
    client_cert: WorkloadCertificate,
    server: ForwardingServer,
    server_cert: WorkloadCertificate,
    request: ConnectRequest,
) -> HboneStream:
    assert server.address is not None
    return await pool.open_stream(
        source=client_cert,
        destination=server.address,
        expected=[server_cert.identity],
        request=request,
    )


async def test_bytes_flow_both_ways_and_headers_arrive(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool()
    request = ConnectRequest(
        SocketAddress.parse(f"127.0.0.1:{upstream.port}"),
        forwarded_for=SocketAddress.parse("127.0.0.9:41234"),
        forwarded_host="orders.shop.svc.cluster.local",
        baggage="k8s.namespace.name=shop",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    stream = await open_via(pool, client_cert, hbone_server, server_cert, request)
    assert stream.peer.identity == server_cert.identity
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream.write(payload)
    await stream.drain()
    stream.write_eof()
    assert await read_all(stream) == payload
    assert hbone_server.seen == [request]
    await pool.close()


async def test_half_close_lets_the_answer_come_back(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
) -> None:
    app = Upstream(mode="after-eof")
    addr = await app.start()
    pool = ConnectionPool()
    stream = await open_via(pool, client_cert, hbone_server, server_cert, ConnectRequest(addr))
    stream.write(b"x" * 5000)
    stream.write_eof()
    assert await read_all(stream) == b"got 5000 bytes then EOF"
    await pool.close()
    await app.close()


@pytest.mark.parametrize(
    ("target", "policy", "status"),
    [
        ("127.0.0.1:1", None, Status.SERVICE_UNAVAILABLE),  # nothing listens there
        ("10.0.0.1:80", None, Status.BAD_REQUEST),  # not a target this server serves
        ("127.0.0.1:{port}", Status.UNAUTHORIZED, Status.UNAUTHORIZED),  # policy says no
    ],
)
async def test_statuses(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
    target: str,
    policy: int | None,
    status: int,
) -> None:
    hbone_server.policy = lambda _stream: policy
    pool = ConnectionPool()
    request = ConnectRequest(SocketAddress.parse(target.format(port=upstream.port)))
    with pytest.raises(StreamRefused) as refused:
        await open_via(pool, client_cert, hbone_server, server_cert, request)
    assert refused.value.status == status
    assert upstream.connections == 0
    # The connection survives a refused stream and serves the next one.
    hbone_server.policy = None
    ok = ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}"))
    stream = await open_via(pool, client_cert, hbone_server, server_cert, ok)
    stream.write_eof()
    assert await read_all(stream) == b""
    assert len(pool.connections()) == 1
    await pool.close()


async def test_connection_death_resets_every_stream(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool()
    request = ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}"))
    streams = [
        await open_via(pool, client_cert, hbone_server, server_cert, request) for _ in range(5)
    ]
    assert hbone_server.server is not None
    [(_, client_conn)] = pool.connections()
    for conn in list(hbone_server.server.connections):
        conn.abort("test kills the connection")
    async with asyncio.timeout(5):
        for stream in streams:
            with pytest.raises(StreamReset):
                await read_all(stream)
            with pytest.raises(StreamReset):
                stream.write(b"more")
    await client_conn.done
    assert pool.connections() == []  # the pool forgot the dead connection
    await pool.close()


async def test_server_shutdown_sends_goaway_and_resets(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    pool = ConnectionPool()
    request = ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}"))
    stream = await open_via(pool, client_cert, hbone_server, server_cert, request)
    await hbone_server.close()
    async with asyncio.timeout(5):
        with pytest.raises(StreamReset):
            await read_all(stream)
    await pool.close()
