"""A whole response to an HTTP/2 client goes in one write when the client's window takes
it, and as head, windowed DATA and end when it does not: never past the window (h2's
client, which refuses a flow-control violation, reads what the waypoint's codec wrote)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from ambient.hbone.stream import HboneStream
from ambient.waypoint.proxy.http2 import _Connection, _Stream
from ambient.waypoint.proxy.messages import ResponseHead
from tests.unit.waypoint.proxy.recording import RecordingStream

BODY = b"x" * 5000


def client(window: int) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
    )
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "orders"),
                          (":path", "/")], end_stream=True)  # fmt: skip
    return conn


def deliver(recording: RecordingStream, peer: h2.connection.H2Connection) -> list[list[object]]:
    """What the waypoint wrote so far, as the client reads it (acknowledging every DATA):
    the events of each write."""
    writes: list[list[object]] = []
    for data in recording.writes:
        events = peer.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                peer.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        writes.append(list(events))
    recording.writes.clear()
    return writes


@pytest.mark.parametrize("window", [65535, 1000])
def test_whole_response_respects_the_clients_window(window: int) -> None:
    async def run() -> list[list[object]]:
        recording = RecordingStream()
        stream: HboneStream = recording  # type: ignore[assignment]
        conn = _Connection(SimpleNamespace(stream=stream))  # type: ignore[arg-type]
        peer = client(window)
        conn.codec.initiate()
        conn.flush()
        conn.codec.receive_data(peer.data_to_send())  # preface, SETTINGS, the request
        conn.flush()  # our SETTINGS ack
        deliver(recording, peer)
        conn.codec.receive_data(peer.data_to_send())  # the client's ack of our SETTINGS
        s = _Stream(conn, 1, None, True)
        conn.streams[1] = s
        head = ResponseHead(200, (("content-type", "text/plain"),))
        sender = asyncio.ensure_future(s.send_whole(head, BODY, (("x-trailer", "t"),)))
        writes: list[list[object]] = []
        for _ in range(50):  # bounded: the client's window updates let the rest through
            await asyncio.sleep(0)
            writes += deliver(recording, peer)
            if sender.done():
                break
            update = peer.data_to_send()
            if update:
                conn._dispatch(conn.codec.receive_data(update))
                conn.flush()
        await sender
        return writes

    writes = asyncio.run(run())
    events = [e for w in writes for e in w]
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == BODY
    assert any(isinstance(e, h2.events.TrailersReceived) for e in events)
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    kinds = [{type(e).__name__ for e in w} for w in writes]
    if window >= len(BODY):  # head, body and trailers in one write
        assert kinds[0] >= {"ResponseReceived", "DataReceived", "TrailersReceived"}, kinds
        assert len(writes) == 1, kinds
    else:  # head first; DATA only as the window opens (h2 refuses any overrun)
        assert "DataReceived" in set().union(*kinds[1:]), kinds
