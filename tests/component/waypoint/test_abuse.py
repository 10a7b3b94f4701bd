"""The waypoint's HTTP/2 (h2c in the tunnel) under abuse: a raw client writing frames with
hyperframe/hpack into a real HBONE tunnel, the real destination ztunnel and apps behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
from hyperframe.frame import HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from ambient.hbone.messages import SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.stream import HboneStream
from tests.component.waypoint.harness import H2_SCRIPTED, ORDERS, WEB, WaypointMesh
from tests.component.waypoint.test_waypoint import open_tunnel
from tests.h2attack import ENHANCE_YOUR_CALM, GOAWAY, PREFACE

AUTHORITY = "orders.shop.svc.cluster.local"


class H2cOverTunnel:
    """A raw h2c client on one HBONE stream to the waypoint."""

    def __init__(self, stream: HboneStream) -> None:
        self.stream = stream
        self.encoder = hpack.Encoder()
        self.buffer = b""

    def request(self, stream_id: int, path: str) -> bytes:
        block = self.encoder.encode(
            [(":method", "GET"), (":scheme", "http"), (":authority", AUTHORITY), (":path", path)]
        )
        return HeadersFrame(stream_id, data=block, flags={"END_HEADERS", "END_STREAM"}).serialize()

    async def frames(self) -> list[tuple[int, int, int, bytes]]:
        """Frames read until the waypoint ends the tunnel (type, flags, stream, payload)."""
        out = []
        while data := await self.stream.read():
            self.buffer += data
            while len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + length:
                    break
                head, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
                out.append((head[3], head[4], int.from_bytes(head[5:9], "big"), head[9:]))
        return out


@pytest.fixture
async def client(mesh: WaypointMesh) -> AsyncIterator[H2cOverTunnel]:
    """One HBONE tunnel to the waypoint for the orders service, a raw h2c client on it."""
    entry = mesh.entry()
    try:
        yield H2cOverTunnel(await entry.open((str(WEB.addresses[0]), 40000)))
    finally:
        await entry.close()


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in frames if t == GOAWAY]
    return codes[0] if codes else None


async def test_rapid_reset_sends_nothing_upstream_and_gets_goaway(
    mesh: WaypointMesh, client: H2cOverTunnel
) -> None:
    wire = PREFACE + SettingsFrame(0).serialize()
    for sid in range(1, 2 * 5000, 2):
        wire += client.request(sid, "/hello") + RstStreamFrame(sid, error_code=8).serialize()
    client.stream.write(wire)
    async with asyncio.timeout(60):
        frames = await client.frames()
    assert goaway_code(frames) == ENHANCE_YOUR_CALM
    upstream = sum(len(app.requests) for app in mesh.apps)
    assert upstream < 50, upstream  # one per pair without the defence


async def test_a_reset_cancels_the_upstream_request(
    mesh: WaypointMesh, client: H2cOverTunnel
) -> None:
    """The app holds a request unanswered; the client resets it: the waypoint resets
    its upstream request, so the app sees its caller go away."""
    client.stream.write(PREFACE + SettingsFrame(0).serialize() + client.request(1, "/hang"))
    waits = [asyncio.ensure_future(app.hanging.wait()) for app in mesh.apps]
    async with asyncio.timeout(20):
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    (app,) = [app for app in mesh.apps if app.hanging.is_set()]
    client.stream.write(RstStreamFrame(1, error_code=8).serialize())
    async with asyncio.timeout(20):
        await app.hung_up.wait()


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_control_flood_gets_goaway(client: H2cOverTunnel, kind: str) -> None:
    frame = PingFrame(0, opaque_data=b"12345678") if kind == "ping" else SettingsFrame(0)
    client.stream.write(PREFACE + SettingsFrame(0).serialize() + frame.serialize() * 5000)
    async with asyncio.timeout(60):
        frames = await client.frames()
    assert goaway_code(frames) == ENHANCE_YOUR_CALM


async def test_header_block_past_the_limit_is_refused(
    mesh: WaypointMesh, client: H2cOverTunnel
) -> None:
    block = client.encoder.encode([(":method", "GET"), (":path", "/")])
    head = HeadersFrame(1, data=block).serialize()
    continuation = (70 * 1024).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big")
    client.stream.write(PREFACE + SettingsFrame(0).serialize() + head + continuation)
    async with asyncio.timeout(20):
        frames = await client.frames()
    assert goaway_code(frames) == ENHANCE_YOUR_CALM


class FloodingUpstream:
    """An h2c app on the pods' port 50052 (service port 84, ``http2``) that answers the
    waypoint's first request with a PING flood instead of a response."""

    def __init__(self) -> None:
        self.goaway_codes: list[int] = []
        self.closed = asyncio.Event()
        self.servers: list[asyncio.AbstractServer] = []

    async def start(self, mesh: WaypointMesh) -> None:
        for app in mesh.apps:
            self.servers.append(await asyncio.start_server(self._serve, str(app.address), 50052))

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        writer.write(PingFrame(0, opaque_data=b"12345678").serialize() * 5000)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.goaway_codes.append(int(event.error_code or 0))
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()
            self.closed.set()


async def test_an_upstream_flooding_the_waypoint_gets_goaway(mesh: WaypointMesh) -> None:
    """The waypoint's HTTP/2 client has the same budgets: a malicious upstream that floods
    PINGs is answered GOAWAY ENHANCE_YOUR_CALM and dropped; the client gets a 503."""
    server = FloodingUpstream()
    await server.start(mesh)
    pool = ConnectionPool()
    try:
        stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], H2_SCRIPTED), pool)
        client = H2cOverTunnel(stream)
        client.stream.write(PREFACE + SettingsFrame(0).serialize() + client.request(1, "/"))
        async with asyncio.timeout(20):
            await server.closed.wait()
        assert ENHANCE_YOUR_CALM in server.goaway_codes, server.goaway_codes
        stream.write_eof()
        async with asyncio.timeout(20):
            frames = await client.frames()
        statuses = [
            [(str(k), str(v)) for k, v in hpack.Decoder().decode(p)]
            for t, _, sid, p in frames
            if t == 0x1 and sid == 1
        ]
        assert statuses and (":status", "503") in statuses[0], statuses
    finally:
        await pool.close()
        await server.close()
