"""The waypoint's memory does not grow with the requests a long-lived HTTP/2 connection carries.

A gRPC client keeps one HTTP/2 connection for hours: every request is a new stream
on it. Whatever the waypoint keeps per stream once it is closed grows such a
connection for ever: h2 remembered the last 65,536 closed streams of a connection
(~115 bytes per request measured here), until the waypoint's own codec
(``h2server``), which forgets a stream once both sides ended. Only the waypoint's
allocations are measured (traces through ``ambient/waypoint``), after a warm-up
that fills its caches (HPACK memo, label sets, pools).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import h2.config
import h2.connection
import h2.events
import pytest

from tests.component.waypoint.harness import WEB, WaypointMesh

# tracemalloc with deep tracebacks: ~40 s of CPU, minutes on a busy machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WARM_UP = 200


class H2Connection(h2.connection.H2Connection):
    """h2's connection remembering 1,000 closed streams (h2: 65,536), the test client's own
    memory out of the way."""

    MAX_CLOSED_STREAMS = 1000


class _Client:
    """HTTP/2 prior knowledge on one connection; ``run`` sends requests ``in_flight`` at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()

    async def run(self, requests: int, in_flight: int = 10) -> None:
        left, ok = requests, 0
        open_: set[int] = set()
        while left or open_:
            while left and len(open_) < in_flight:
                sid = self.h2.get_next_available_stream_id()
                head = [(":method", "GET"), (":scheme", "http"), (":authority", "orders")]
                self.h2.send_headers(sid, [*head, (":path", "/hello")], end_stream=True)
                open_.add(sid)
                left -= 1
            self.writer.write(self.h2.data_to_send())
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the waypoint closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[b":status"] == b"200"
                elif isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    open_.discard(event.stream_id)
                    ok += 1
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    raise AssertionError(f"unexpected {event}")
        assert ok == requests


def _waypoint_bytes(snapshot: tracemalloc.Snapshot) -> int:
    inside = snapshot.filter_traces(
        [tracemalloc.Filter(True, "*/ambient/waypoint/*", all_frames=True)]
    )
    return sum(trace.size for trace in inside.traces)


def _forget_requests(mesh: WaypointMesh) -> None:
    """The test apps log every request they serve: not the waypoint's memory (but freed
    objects are reused from CPython's free lists, so what they keep can carry a waypoint
    line's trace)."""
    for app in mesh.apps:
        app.requests.clear()


async def _settled(baseline: int) -> None:
    """Until the waypoint's request tasks have finished (they log and count after the
    response went out): no more tasks than ``baseline``, for at most 5 s."""
    for _ in range(500):
        if len(asyncio.all_tasks()) <= baseline:
            return
        await asyncio.sleep(0.01)


async def test_a_long_lived_http2_connection_costs_no_memory_per_request(
    mesh: WaypointMesh,
) -> None:
    entry = mesh.entry()
    await entry.start()
    tracemalloc.start(16)
    try:
        reader, writer = await asyncio.open_connection(str(WEB.addresses[0]), entry.port)
        client = _Client(reader, writer)
        await client.run(1)
        baseline = len(asyncio.all_tasks())
        await client.run(WARM_UP)
        await _settled(baseline)
        _forget_requests(mesh)
        gc.collect()
        before = _waypoint_bytes(tracemalloc.take_snapshot())
        await client.run(1000)
        await _settled(baseline)
        _forget_requests(mesh)
        gc.collect()
        grown = _waypoint_bytes(tracemalloc.take_snapshot()) - before
        writer.close()
    finally:
        tracemalloc.stop()
        await entry.close()
    assert grown < 1000 * 40, f"the waypoint grew by {grown} bytes over 1,000 requests"
