"""``HboneServer.drain``: a listener whose pod is gone ends its connections once idle, so a
client's pool does not send new CONNECTs for that address to it (the address may belong
to a new pod, with a listener of its own, by then)."""

from __future__ import annotations

import asyncio

from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.server import HboneServer
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from tests.component.hbone.harness import ForwardingServer, Upstream


def _request(upstream: Upstream) -> ConnectRequest:
    return ConnectRequest(SocketAddress.parse(f"127.0.0.1:{upstream.port}"))


async def test_an_open_tunnel_carries_on_and_the_next_connect_reaches_the_new_listener(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    assert hbone_server.address is not None and hbone_server.server is not None
    address = hbone_server.address
    pool = ConnectionPool()

    async def open_stream() -> HboneStream:
        return await pool.open_stream(
            source=client_cert,
            destination=address,
            expected=[server_cert.identity],
            request=_request(upstream),
        )

    stream = await open_stream()
    [(_, old)] = pool.connections()
    await hbone_server.server.drain()  # the pod is gone: its listener closes
    stream.write(b"still here")
    assert await stream.read() == b"still here"  # the open tunnel is not cut
    assert not old.closed
    # a new pod gets the address, with a listener of its own
    successor = ForwardingServer(lambda: server_cert)
    successor.server = HboneServer(successor.certificate, successor._handle)
    await successor.server.start(str(address.ip), address.port)
    stream.reset()  # the last tunnel of the old connection ends: it is closed
    async with asyncio.timeout(10):
        await old.done
    fresh = await open_stream()
    fresh.write(b"new pod")
    assert await fresh.read() == b"new pod"
    assert successor.seen == [_request(upstream)]  # on the new listener
    assert [c for _, c in pool.connections()] != [old]
    fresh.reset()
    await pool.close()
    await successor.close()


async def test_an_idle_connection_is_ended_at_once(
    client_cert: WorkloadCertificate,
    server_cert: WorkloadCertificate,
    hbone_server: ForwardingServer,
    upstream: Upstream,
) -> None:
    assert hbone_server.address is not None and hbone_server.server is not None
    pool = ConnectionPool()
    stream = await pool.open_stream(
        source=client_cert,
        destination=hbone_server.address,
        expected=[server_cert.identity],
        request=_request(upstream),
    )
    [(_, conn)] = pool.connections()
    stream.reset()
    assert not conn.closed  # pooled, idle (the server ends it once it has seen the reset)
    await hbone_server.server.drain()
    async with asyncio.timeout(10):
        await conn.done
    assert pool.connections() == []
    await pool.close()
