"""The waypoint's HTTP/2 upstream: multiplexing, connection limits, refused streams, GOAWAY, memory.

Most of it against grpcio servers (the orders pods' ``grpcapp.Echo``). Refused
streams and GOAWAY need a server that misbehaves on purpose: a scripted h2
server (``ScriptedH2``, on the pods' port 50052, service port 84 declaring
``http2``) that refuses or GOAWAYs the first stream of each connection and
answers the rest ``200`` with a body and trailers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from ambient.config import load_text
from ambient.hbone.messages import SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.waypoint.routing import build_router
from tests.component.waypoint.harness import (
    H2_SCRIPTED,
    ORDERS,
    WaypointMesh,
    start_mesh,
)
from tests.component.waypoint.test_grpc import Channel, _until, calls
from tests.component.waypoint.test_waypoint import open_tunnel
from tests.e2e.grpcapp.echo import method
from tests.pki import make_ca


async def test_concurrent_calls_share_one_connection_per_endpoint(mesh: WaypointMesh) -> None:
    async with Channel(mesh) as channel:
        sleep = channel.unary_unary(method("Sleep"))
        pending = [asyncio.ensure_future(sleep(b"300")) for _ in range(40)]
        await _until(lambda: calls(mesh) >= 40, "40 calls to reach the servers")
        live = mesh.waypoint.upstream.http2.connections()
        assert len(live) == 2  # one per orders pod, 40 streams multiplexed on them
        assert sum(len(c.exchanges) for c in live) == 40
        assert await asyncio.gather(*pending) == [b"slept"] * 40
        assert sum(c.requests for c in live) == 40
        assert all(not c.exchanges for c in live)  # every stream forgotten once done


async def test_max_requests_per_connection_drains_and_closes(tmp_path: Path) -> None:
    yaml = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: shop}
spec:
  host: orders
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 2}}}
"""
    router = build_router(load_text(yaml, "r.yaml"), [ORDERS])
    async for mesh in start_mesh(make_ca(tmp_path), router=router):
        async with Channel(mesh) as channel:
            unary = channel.unary_unary(method("Unary"))
            for i in range(6):
                assert (await unary(b"x%d" % i)).endswith(b"x%d" % i)
            live = mesh.waypoint.upstream.http2.connections()
            assert all(c.requests <= 2 for c in live)
            await asyncio.sleep(0)
            assert not [c for c in live if c.requests == 2 and not c.dead]  # drained ones closed


class ScriptedH2:
    """An h2c server on the pods' port 50052: ``mode`` refuses (``refuse``) or GOAWAYs
    (``goaway``, last stream id 0) the very first stream it gets; other streams get 200,
    ``ok`` and a ``x-trailer: yes`` trailer."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.streams = 0
        self.servers: list[asyncio.AbstractServer] = []

    async def start(self, mesh: WaypointMesh) -> None:
        for app in mesh.apps:
            self.servers.append(await asyncio.start_server(self._serve, str(app.address), 50052))

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.streams += 1
                        first = self.streams == 1
                        sid = event.stream_id
                        if first and self.mode == "refuse":
                            conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                        elif first and self.mode == "goaway":
                            conn.close_connection(last_stream_id=0)
                        else:
                            conn.send_headers(sid, [(":status", "200")])
                            conn.send_data(sid, b"ok")
                            conn.send_headers(sid, [("x-trailer", "yes")], end_stream=True)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()


async def h2_get(
    mesh: WaypointMesh, pool: ConnectionPool
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """One h2c GET through the waypoint to service port 84: (status, body, trailers)."""
    stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], H2_SCRIPTED), pool)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "GET"), (":scheme", "http"), (":authority", "orders"), (":path", "/")],
        end_stream=True,
    )  # fmt: skip
    stream.write(conn.data_to_send())
    status, body = 0, b""
    trailers: list[tuple[bytes, bytes]] = []
    while True:
        data = await stream.read()
        assert data, "the waypoint closed the tunnel before the response ended"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                stream.write_eof()
                return status, body, trailers
        stream.write(conn.data_to_send())


@pytest.mark.parametrize("mode", ["refuse", "goaway"])
async def test_a_refused_stream_is_retried(mesh: WaypointMesh, mode: str) -> None:
    """REFUSED_STREAM, or a stream past a GOAWAY's last id, was not processed: Istio's
    default retry policy (refused-stream) sends it again, and the client sees only 200."""
    server = ScriptedH2(mode)
    await server.start(mesh)
    pool = ConnectionPool()
    try:
        status, body, trailers = await h2_get(mesh, pool)
    finally:
        await pool.close()
        await server.close()
    assert (status, body) == (200, b"ok")
    assert (b"x-trailer", b"yes") in trailers
    assert server.streams == 2  # refused once, then served
    live = mesh.waypoint.upstream.http2.connections()
    assert live and not any(c.draining for c in live)  # the GOAWAY'd one is out of the pool


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_100mb_grpc_streams_both_ways_with_bounded_memory(mesh: WaypointMesh) -> None:
    """100 MB up (client streaming) and 100 MB down (server streaming) through the waypoint:
    everything runs in this process, so its RSS bounds what the path buffers."""
    size, message = 100 * 1024 * 1024, 64 * 1024
    baseline = peak = _rss_mb()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    started = time.monotonic()
    try:
        async with Channel(mesh) as channel:

            async def upload() -> AsyncIterator[bytes]:
                chunk = b"u" * message
                for _ in range(size // message):
                    yield chunk

            total = await channel.stream_unary(method("ClientStream"))(upload())
            assert int(total) == size
            received = 0
            stream = channel.unary_stream(method("ServerStream"))(
                f"{size // message},{message}".encode()
            )
            async for reply in stream:
                received += len(reply)
            assert received == size and await stream.code() == grpc.StatusCode.OK
    finally:
        done.set()
        await sampler
    grew = peak - baseline
    print(f"2 x 100 MB over gRPC in {time.monotonic() - started:.1f}s: RSS +{grew:.0f} MB")
    assert grew < 80, f"RSS grew {grew:.0f} MB while streaming 2 x 100 MB"


async def test_nothing_is_kept_for_an_endpoint_once_its_connections_are_gone(
    mesh: WaypointMesh,
) -> None:
    async with Channel(mesh) as channel:
        assert (await channel.unary_unary(method("Unary"))(b"x")).endswith(b"|x")
    client = mesh.waypoint.upstream.http2
    assert client.connections()
    client.close()
    assert not client.connections() and not client._pools and not client._dialing
