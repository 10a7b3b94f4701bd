"""A large HTTP/2 response through the waypoint to a client that reads late (real TLS, h2's client).

The waypoint's HTTP/2 server has two kinds of writers on a tunnel's HBONE
stream: each response's sender, and the frame reader (PING and SETTINGS
acknowledgements, WINDOW_UPDATE), and both wait in ``drain()`` while the
stream's queue is above its high-water mark. The client here opens wide
HTTP/2 windows, stops reading until the sender is waiting, then sends a PING,
so the reader waits too: once the client reads again, both must go on (the
gRPC 100 MB e2e stalled for good when only the last of them was woken).
"""

from __future__ import annotations

import asyncio
import re

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from ambient.hbone.messages import SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.stream import WRITE_HIGH_WATER, HboneStream
from ambient.taskdump import debug_text
from tests.component.waypoint.harness import ORDERS, WaypointMesh
from tests.component.waypoint.test_resilience import until
from tests.component.waypoint.test_waypoint import open_tunnel

SIZE = 24 * 1024 * 1024
WINDOW = 16 * 1024 * 1024  # ours, for the waypoint to send into: more than the HBONE windows
BOUND = 60.0  # seconds for the whole exchange on a loaded machine; a stall never ends


def tunnels(mesh: WaypointMesh) -> list[HboneStream]:
    """The waypoint's side of the HBONE tunnels it serves."""
    return [
        stream
        for server in mesh.waypoint._servers
        for conn in server.connections
        for stream in conn.streams.values()
    ]


def sender_waiting(mesh: WaypointMesh) -> bool:
    """A tunnel has more queued for its client than the high-water mark: its response's
    sender, which checks right after each write, is waiting in ``drain()``."""
    return any(s._conn.conn.queued(s.stream_id) > WRITE_HIGH_WATER for s in tunnels(mesh))


def reader_waiting(mesh: WaypointMesh) -> bool:
    """The tunnel's frame reader took everything the client sent and is not waiting for
    more: it is waiting in ``drain()`` (its only other pause)."""
    return any(s._read_waiter is None and not s._buffer for s in tunnels(mesh))


async def test_a_client_reading_late_gets_the_whole_response(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream: HboneStream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW}
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(WINDOW)
        conn.send_headers(
            1, [(":method", "GET"), (":scheme", "http"), (":authority", "orders"),
                (":path", f"/bytes?n={SIZE}")], end_stream=True,
        )  # fmt: skip
        stream.write(conn.data_to_send())
        response = Response()
        try:
            async with asyncio.timeout(BOUND):
                await until(lambda: sender_waiting(mesh), 30)  # we do not read: the window closes
                conn.ping(b"12345678")  # the waypoint's reader answers, then waits for room
                stream.write(conn.data_to_send())
                await until(lambda: reader_waiting(mesh), 30)
                dump = debug_text()  # /debug/tasks: each layer's windows, where tasks wait
                assert re.search(r"^[1-9]\d* waypoint HTTP/2 tunnels \(downstream\)$", dump, re.M)
                assert '"window_waiting": false' in dump and "in _Stream.send_data" in dump
                await response.read(stream, conn)
        except TimeoutError:
            pytest.fail(f"the response stalled after {response.received} of {SIZE} bytes")
        assert (response.status, response.received) == (200, SIZE)
        stream.write_eof()
    finally:
        await pool.close()


class Response:
    """Stream 1's response as h2 reads it, every DATA acknowledged at once."""

    def __init__(self) -> None:
        self.status = 0
        self.received = 0

    async def read(self, stream: HboneStream, conn: h2.connection.H2Connection) -> None:
        while True:
            data = await stream.read()
            assert data, "the waypoint closed the tunnel before the response ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.received += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return
            stream.write(conn.data_to_send())
