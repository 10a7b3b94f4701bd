"""The waypoint's upstream HTTP/2 client codec against h2's server (an implementation not ours).

Bytes go between ``H2Client`` and an ``h2`` server connection in memory; the
server is scripted to answer, misbehave or break the protocol, and the tests
assert the client's events and what it sends back. A hypothesis target feeds
arbitrary bytes after a real handshake: the codec never raises.
"""

from __future__ import annotations

import struct
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    GoAway,
    HeadersReceived,
    StreamReset,
)
from ambient.waypoint.proxy.h2client import (
    CANCEL,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    H2Client,
    encode_headers,
)

STREAM_WINDOW = 1024 * 1024
REQUEST = [(":method", "POST"), (":scheme", "http"), (":authority", "svc:80"), (":path", "/x")]


class Pair:
    """Our client and h2's server, wired in memory."""

    def __init__(self, validate: bool = True, **server_settings: int) -> None:
        self.client = H2Client(STREAM_WINDOW, 16 * STREAM_WINDOW)
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding="utf-8",
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        self.server = h2.connection.H2Connection(config)
        self.server.initiate_connection()
        if server_settings:
            self.server.update_settings(
                {getattr(h2.settings.SettingCodes, k): v for k, v in server_settings.items()}
            )
        self.client.initiate()
        self.server_events = self.to_server()
        self.events = self.to_client()

    def to_server(self) -> list[h2.events.Event]:
        return self.server.receive_data(self.client.data_to_send())

    def to_client(self, extra: bytes = b"") -> list[object]:
        return list(self.client.receive_data(self.server.data_to_send() + extra))

    def request(self, headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        stream_id = self.client.open_stream()
        self.client.send_headers(stream_id, headers or REQUEST, end=end)
        self.server_events = self.to_server()
        return stream_id


def headers_of(event: h2.events.RequestReceived) -> dict[str, str]:
    """The request's headers (the test server decodes them: ``header_encoding``)."""
    return dict(cast("list[tuple[str, str]]", event.headers))


def test_handshake_settings_and_connection_window() -> None:
    pair = Pair()
    changed = [e for e in pair.server_events if isinstance(e, h2.events.RemoteSettingsChanged)]
    values = {int(k): v.new_value for k, v in changed[0].changed_settings.items()}
    assert values[h2.settings.SettingCodes.ENABLE_PUSH] == 0
    assert values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    assert pair.server.outbound_flow_control_window == 16 * STREAM_WINDOW
    assert not [e for e in pair.events if isinstance(e, ConnectionLost)]


def test_a_request_and_a_response_with_data_and_trailers() -> None:
    pair = Pair()
    stream_id = pair.request(
        [*REQUEST, ("content-type", "application/grpc"), ("te", "trailers"), ("x-long", "v" * 300)]
    )
    received = next(e for e in pair.server_events if isinstance(e, h2.events.RequestReceived))
    assert headers_of(received)[":path"] == "/x" and headers_of(received)["x-long"] == "v" * 300
    pair.server.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    pair.server.send_data(stream_id, b"payload")
    pair.server.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
    events = pair.to_client()
    assert events == [
        HeadersReceived(stream_id, 200, (("content-type", "application/grpc"),), False),
        DataReceived(stream_id, b"payload", 7, False),
        HeadersReceived(stream_id, 0, (("grpc-status", "0"),), True, trailers=True),
    ]


def test_trailers_only_response_and_informational_heads() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(":status", "100")])
    pair.server.send_headers(stream_id, [(":status", "200"), ("grpc-status", "7")], end_stream=True)
    assert pair.to_client() == [
        HeadersReceived(stream_id, 200, (("grpc-status", "7"),), True),
    ]


def test_request_body_windows_and_continuation() -> None:
    pair = Pair()
    stream_id = pair.request(end=False)
    assert pair.client.window(stream_id) == 65535  # the server's default initial window
    pair.client.send_data(stream_id, b"x" * 40000, end=True)  # split at 16 KiB frames
    events = pair.to_server()
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == b"x" * 40000 and any(isinstance(e, h2.events.StreamEnded) for e in events)
    assert pair.client.window(stream_id) == 0  # nothing more to send once ended
    big = pair.client.open_stream()
    pair.client.send_headers(big, [*REQUEST, ("x-big", "b" * 40000)], end=True)  # CONTINUATIONs
    received = [e for e in pair.to_server() if isinstance(e, h2.events.RequestReceived)]
    assert headers_of(received[0])["x-big"] == "b" * 40000


def test_window_updates_once_half_a_window_is_consumed() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(":status", "200")])
    for _ in range(40):
        pair.server.send_data(stream_id, b"d" * 16000)
    events = pair.to_client()
    assert sum(e.flow for e in events if isinstance(e, DataReceived)) == 640_000
    before = pair.server.local_flow_control_window(stream_id)
    pair.client.acknowledge(stream_id, 100_000)  # under half the stream window: nothing yet
    assert pair.client.data_to_send() == b""
    pair.client.acknowledge(stream_id, 500_000)
    pair.to_server()
    assert pair.server.local_flow_control_window(stream_id) == before + 600_000


def test_data_beyond_the_window_is_a_flow_control_error() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(":status", "200")])
    head = pair.to_client()
    assert isinstance(head[0], HeadersReceived)
    frames = b"".join(
        struct.pack(">I", 16000)[1:] + bytes((0, 0)) + struct.pack(">I", stream_id) + b"z" * 16000
        for _ in range(70)  # 1.1 MB on a 1 MiB stream window
    )
    events = pair.client.receive_data(frames)
    assert isinstance(events[-1], ConnectionLost) and events[-1].error_code == FLOW_CONTROL_ERROR
    assert pair.client.receive_data(b"\0" * 30) == []  # nothing more once dead


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("content-type", "x")], "without :status"),
        ([(":status", "2000")], "bad :status"),
        ([(":status", "200"), ("Upper", "x")], "bad header name"),
        ([(":status", "200"), ("connection", "close")], "connection-specific"),
        ([(":status", "200"), (":path", "/")], "bad header name"),
        ([(":status", "200"), ("x", "a\nb")], "control character"),
    ],
)
def test_malformed_responses_reset_their_stream(
    headers: list[tuple[str, str]], reason: str
) -> None:
    pair = Pair(validate=False)
    stream_id = pair.request()
    pair.server.send_headers(stream_id, headers, end_stream=True)
    events = pair.to_client()
    assert events == [StreamReset(stream_id, PROTOCOL_ERROR, local=True)], reason
    rst = struct.pack(">I", 4)[1:] + bytes((3, 0)) + struct.pack(">II", stream_id, PROTOCOL_ERROR)
    assert rst in pair.client.data_to_send()


def test_resets_goaway_ping_and_unknown_frames() -> None:
    pair = Pair()
    first, second = pair.request(), pair.request()
    pair.server.ping(b"12345678")
    unknown = struct.pack(">I", 3)[1:] + bytes((0xEE, 0)) + struct.pack(">I", 0) + b"abc"
    assert pair.to_client(unknown) == []  # answered, and an unknown type is ignored
    acks = [e for e in pair.to_server() if isinstance(e, h2.events.PingAckReceived)]
    assert acks and acks[0].ping_data == b"12345678"
    pair.server.reset_stream(first, REFUSED_STREAM)
    pair.server.close_connection(last_stream_id=first)
    assert pair.to_client() == [StreamReset(first, REFUSED_STREAM), GoAway(first, 0)]
    assert second > first


def test_local_reset_sends_cancel() -> None:
    pair = Pair()
    stream_id = pair.request(end=False)
    pair.client.reset(stream_id, CANCEL)
    reset = [e for e in pair.to_server() if isinstance(e, h2.events.StreamReset)]
    assert reset[0].error_code == CANCEL


def test_a_frame_larger_than_allowed_is_a_connection_error() -> None:
    pair = Pair()
    oversized = struct.pack(">I", 20000)[1:] + bytes((0, 0)) + struct.pack(">I", 1)
    events = pair.client.receive_data(oversized)
    assert events == [ConnectionLost(FRAME_SIZE_ERROR, "a frame of 20000 bytes")]
    goaway = [e for e in pair.to_server() if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == FRAME_SIZE_ERROR


def test_push_promise_is_refused() -> None:
    pair = Pair()
    pair.request()
    push = struct.pack(">I", 4)[1:] + bytes((5, 4)) + struct.pack(">II", 1, 2)
    events = pair.client.receive_data(push)
    assert isinstance(events[0], ConnectionLost) and events[0].error_code == PROTOCOL_ERROR


def test_a_changed_header_table_size_is_acknowledged() -> None:
    """RFC 7541 4.2: a dynamic table size update (to 0: we keep no table) opens the next block."""
    pair = Pair(HEADER_TABLE_SIZE=100)
    pair.to_server()  # our SETTINGS acknowledgement
    blocks = []
    for _ in range(2):
        pair.client.send_headers(pair.client.open_stream(), REQUEST, end=True)
        sent = pair.client.data_to_send()
        assert sent[3] == 1  # a HEADERS frame
        blocks.append(sent[9:])
        received = pair.server.receive_data(sent)
        assert any(isinstance(e, h2.events.RequestReceived) for e in received)
    assert blocks[0] == b"\x20" + encode_headers(REQUEST)
    assert blocks[1] == encode_headers(REQUEST)


def test_settings_open_windows_and_limit_streams() -> None:
    pair = Pair(MAX_CONCURRENT_STREAMS=7, INITIAL_WINDOW_SIZE=1000)
    assert pair.client.max_concurrent_streams == 7
    stream_id = pair.request(end=False)
    assert pair.client.window(stream_id) == 1000


# -- fuzz: whatever the server sends, the codec never raises -------------------------------------

_FRAME = st.builds(
    lambda kind, flags, stream, payload: (
        struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream)
        + payload
    ),
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 + 1]),
    st.binary(max_size=64),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAME, max_size=12), st.binary(max_size=64), st.integers(1, 40))
def test_arbitrary_frames_never_raise(frames: list[bytes], tail: bytes, split: int) -> None:
    pair = Pair()
    pair.request()
    pair.request(end=False)
    data = b"".join(frames) + tail
    events: list[object] = []
    for start in range(0, len(data), split):
        events += pair.client.receive_data(data[start : start + split])
    lost = [i for i, e in enumerate(events) if isinstance(e, ConnectionLost)]
    assert not lost or lost[0] == len(events) - 1  # nothing after a connection error
    pair.client.data_to_send()


def test_repeated_heads_and_trailers_are_checked_once_and_reported_alike() -> None:
    """The decoder hands back the same tuple for a repeated block: the client checks it
    once; a different (malformed) head after them is still refused."""
    pair = Pair(validate=False)
    head = [(":status", "200"), ("content-type", "application/grpc")]
    for _ in range(3):
        stream_id = pair.request()
        pair.server.send_headers(stream_id, head)
        pair.server.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        assert pair.to_client() == [
            HeadersReceived(stream_id, 200, (("content-type", "application/grpc"),), False),
            HeadersReceived(stream_id, 0, (("grpc-status", "0"),), True, trailers=True),
        ]
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [*head, ("connection", "close")], end_stream=True)
    assert pair.to_client() == [StreamReset(stream_id, PROTOCOL_ERROR, local=True)]
    stream_id = pair.request()
    pair.server.send_headers(stream_id, head)
    pair.server.send_headers(stream_id, [("grpc-status", "0"), ("x", "a\nb")], end_stream=True)
    assert pair.to_client()[-1] == StreamReset(stream_id, PROTOCOL_ERROR, local=True)
