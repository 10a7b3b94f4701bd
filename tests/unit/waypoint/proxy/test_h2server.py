"""The waypoint's downstream HTTP/2 server codec against h2's client (an implementation not ours),
and against h2's server on the same inputs (never more lenient).

Bytes go between ``H2Server`` and an ``h2`` client connection in memory; the
client sends requests, bodies, trailers, resets and broken frames, and the
tests assert the server's events and what it answers. Hypothesis targets: any
request header list h2's server refuses is refused here too (and one it
accepts gives the same fields), and arbitrary bytes after a real handshake
never make the codec raise.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    GoAway,
    HeadersReceived,
    StreamReset,
    WindowOpened,
)
from ambient.http2.guard import DEFAULT_LIMITS, FloodGuard
from ambient.waypoint.proxy.h2server import H2Server, RequestReceived, StreamGone

STREAM_WINDOW = 1024 * 1024
REQUEST = [(":method", "POST"), (":scheme", "http"), (":authority", "svc:80"), (":path", "/x")]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 1, 3, 5, 6
REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 9, 11


def server(max_streams: int = 100, guard: bool = False) -> H2Server:
    return H2Server(
        stream_window=STREAM_WINDOW,
        connection_window=16 * STREAM_WINDOW,
        max_streams=max_streams,
        max_header_list=64 * 1024,
        guard=FloodGuard(DEFAULT_LIMITS, 64 * 1024) if guard else None,
    )


class Pair:
    """h2's client and our server, wired in memory."""

    def __init__(self, max_streams: int = 100, guard: bool = False) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        self.server = server(max_streams, guard)
        self.server.initiate()
        self.events = self.to_server()
        self.client_events = self.to_client()

    def to_server(self, extra: bytes = b"") -> list[Any]:
        return list(self.server.receive_data(self.client.data_to_send() + extra))

    def to_client(self) -> list[Any]:
        return list(self.client.receive_data(self.server.data_to_send()))

    def send(self, stream_id: int, data: bytes) -> None:
        for start in range(0, len(data), 16384):
            self.client.send_data(stream_id, data[start : start + 16384])

    def request(self, headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, headers or REQUEST, end_stream=end)
        self.events = self.to_server()
        return stream_id


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", (len(payload) << 8) | kind, flags, stream_id) + payload


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data``."""
    out, pos = [], 0
    while pos + 9 <= len(data):
        word, flags, stream_id = struct.unpack_from(">IBI", data, pos)
        length = word >> 8
        out.append((word & 0xFF, flags, stream_id, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return out


def goaway(data: bytes) -> int | None:
    """The error code of the GOAWAY in ``data`` (None without one)."""
    pos = 0
    while pos + 9 <= len(data):
        word, _, _ = struct.unpack_from(">IBI", data, pos)
        length, kind = word >> 8, word & 0xFF
        if kind == 7:
            return int(struct.unpack_from(">I", data, pos + 13)[0])
        pos += 9 + length
    return None


def lost(events: Sequence[object]) -> int:
    found = [e for e in events if isinstance(e, ConnectionLost)]
    assert found, events
    return found[0].error_code


def test_handshake_settings_and_connection_window() -> None:
    pair = Pair()
    changed = [e for e in pair.client_events if isinstance(e, h2.events.RemoteSettingsChanged)]
    values = {int(k): v.new_value for k, v in changed[0].changed_settings.items()}
    assert values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    assert values[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert values[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert pair.client.outbound_flow_control_window == 16 * STREAM_WINDOW
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in pair.client_events)


def test_a_request_with_body_and_trailers_and_a_response_with_trailers() -> None:
    pair = Pair()
    stream_id = pair.request([*REQUEST, ("content-length", "5"), ("x-a", "1")], end=False)
    (head,) = pair.events
    assert isinstance(head, RequestReceived) and not head.end_stream
    assert head.pseudo == {":method": "POST", ":scheme": "http", ":authority": "svc:80",
                           ":path": "/x"}  # fmt: skip
    assert head.headers == (("content-length", "5"), ("x-a", "1"))
    pair.client.send_data(stream_id, b"hello")
    pair.client.send_headers(stream_id, [("grpc-x", "y")], end_stream=True)
    data, trailers = pair.to_server()
    assert isinstance(data, DataReceived) and data.data == b"hello" and data.flow == 5
    assert isinstance(trailers, HeadersReceived) and trailers.trailers
    assert trailers.headers == (("grpc-x", "y"),)
    pair.server.send_headers(stream_id, [(":status", "200"), ("content-type", "a/b")], False)
    pair.server.send_data(stream_id, b"world")
    pair.server.send_headers(stream_id, [("grpc-status", "0")], True)
    events = pair.to_client()
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ResponseReceived", "DataReceived", "TrailersReceived", "StreamEnded"]
    assert events[0].headers == [(":status", "200"), ("content-type", "a/b")]
    assert events[2].headers == [("grpc-status", "0")]
    with pytest.raises(StreamGone):
        pair.server.send_data(stream_id, b"more")


def test_request_body_windows_and_updates_in_halves() -> None:
    pair = Pair()
    stream_id = pair.request(end=False)
    body = b"x" * 600_000
    pair.send(stream_id, body[: 16384 * 30])
    events = pair.to_server()
    got = sum(e.flow for e in events if isinstance(e, DataReceived))
    assert got == 16384 * 30
    pair.server.acknowledge(stream_id, got)  # less than half the stream window: no update
    assert pair.server.data_to_send() == b""
    pair.send(stream_id, body[16384 * 30 : 16384 * 33])
    got2 = sum(e.flow for e in pair.to_server() if isinstance(e, DataReceived))
    pair.server.acknowledge(stream_id, got2)
    events = pair.to_client()
    updates = [e for e in events if isinstance(e, h2.events.WindowUpdated)]
    assert [u.stream_id for u in updates] == [stream_id]
    assert updates[0].delta == got + got2


def test_response_waits_for_the_clients_window() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(":status", "200")], False)
    assert pair.server.window(stream_id) == 65535
    pair.server.send_data(stream_id, b"y" * 65535)
    assert pair.server.window(stream_id) == 0
    pair.to_client()
    pair.client.acknowledge_received_data(65535, stream_id)
    opened = pair.to_server()
    assert any(isinstance(e, WindowOpened) and e.stream_id == stream_id for e in opened)
    assert pair.server.window(stream_id) > 0


def test_client_settings_change_windows_frame_size_and_table() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.client.update_settings(
        {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100_000,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: 20_000,
            h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0,
        }
    )
    events = pair.to_server()
    pair.to_client()  # our ACK: h2 applies its new settings
    assert any(isinstance(e, WindowOpened) for e in events)
    assert pair.server.window(stream_id) == 65535  # the connection window still bounds it
    assert pair.server.frame_size == 20_000
    pair.server.send_headers(stream_id, [(":status", "200"), ("x", "v" * 30_000)], True)
    events = pair.to_client()  # CONTINUATION above 20,000 bytes; a table size update first
    response = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    fields: list[Any] = list(response[0].headers or [])
    assert fields[1] == ("x", "v" * 30_000)  # h2's client decodes to text (header_encoding)


def test_ping_is_answered_and_goaway_reported() -> None:
    pair = Pair()
    pair.client.ping(b"12345678")
    pair.to_server()
    acks = [e for e in pair.to_client() if isinstance(e, h2.events.PingAckReceived)]
    assert acks and acks[0].ping_data == b"12345678"
    pair.client.close_connection()
    (away,) = pair.to_server()
    assert isinstance(away, GoAway) and away.error_code == 0


def test_client_reset_is_reported_and_the_stream_forgotten() -> None:
    pair = Pair()
    stream_id = pair.request(end=False)
    pair.client.reset_stream(stream_id, 8)
    (reset,) = pair.to_server()
    assert isinstance(reset, StreamReset) and reset.error_code == 8 and not reset.local
    with pytest.raises(StreamGone):
        pair.server.send_headers(stream_id, [(":status", "200")], True)


def test_frames_on_a_stream_we_reset_are_dropped() -> None:
    pair = Pair()
    stream_id = pair.request(end=False)
    pair.server.reset(stream_id, 0)
    pair.client.send_data(stream_id, b"in flight")  # h2 has not read our RST_STREAM yet
    pair.client.send_headers(stream_id, [("t", "1")], end_stream=True)
    assert pair.to_server() == []
    assert goaway(pair.server.data_to_send()) is None


def test_too_many_streams_are_refused_one_by_one() -> None:
    pair = Pair(max_streams=2)
    pair.request(end=False), pair.request(end=False)
    block = hpack.Encoder().encode(REQUEST)  # h2's client would not open a third
    assert pair.to_server(frame(1, 4, 5, block)) == []
    assert frames(pair.server.data_to_send()) == [(3, 0, 5, struct.pack(">I", REFUSED_STREAM))]
    pair.server.reset(1, 0)  # room again: stream 7 is served
    pair.server.data_to_send()
    (head,) = pair.to_server(frame(1, 5, 7, hpack.Encoder().encode(REQUEST)))
    assert isinstance(head, RequestReceived) and head.stream_id == 7


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (frame(0, 0, 1, b"x"), PROTOCOL_ERROR),  # DATA on an idle stream
        (frame(0, 0, 0, b"x"), PROTOCOL_ERROR),  # DATA on stream 0
        (frame(1, 4, 2, b"\x82"), PROTOCOL_ERROR),  # HEADERS on an even stream
        (frame(9, 4, 1, b"\x82"), PROTOCOL_ERROR),  # CONTINUATION without HEADERS
        (frame(5, 4, 1, b"\0\0\0\2\x82"), PROTOCOL_ERROR),  # PUSH_PROMISE from a client
        (frame(6, 0, 0, b"1234"), FRAME_SIZE_ERROR),  # PING of 4 bytes
        (frame(6, 0, 1, b"12345678"), PROTOCOL_ERROR),  # PING on a stream
        (frame(8, 0, 0, b"\0\0\0\0"), PROTOCOL_ERROR),  # WINDOW_UPDATE of 0
        (frame(8, 0, 0, b"\x7f\xff\xff\xff"), FLOW_CONTROL_ERROR),  # window overflow
        (frame(3, 0, 1, b"\0\0\0\0"), PROTOCOL_ERROR),  # RST_STREAM on an idle stream
        (frame(4, 0, 0, b"\0\4\x80\0\0\0"), FLOW_CONTROL_ERROR),  # initial window > 2^31-1
        (frame(4, 0, 0, b"\0\5\0\0\0\1"), PROTOCOL_ERROR),  # max frame size below 16384
        (frame(4, 0, 0, b"\0\2\0\0\0\2"), PROTOCOL_ERROR),  # ENABLE_PUSH 2
        (frame(4, 1, 0, b"\0\2\0\0\0\0"), FRAME_SIZE_ERROR),  # SETTINGS ACK with a payload
        (frame(1, 4, 1, b"\xff\xff\xff\xff"), COMPRESSION_ERROR),  # bad HPACK
        (frame(0, 0, 1, b"x" * 16385), FRAME_SIZE_ERROR),  # larger than we allow
        (frame(1, 0, 1, b"\x82") + frame(6, 0, 0, b"12345678"), PROTOCOL_ERROR),  # interrupted
    ],
)
def test_protocol_violations_are_connection_errors(raw: bytes, code: int) -> None:
    pair = Pair()
    assert lost(pair.to_server(raw)) == code
    assert goaway(pair.server.data_to_send()) == code
    assert pair.server.receive_data(frame(6, 0, 0, b"12345678")) == []  # nothing more is read


def test_the_preface_must_open_the_connection_followed_by_settings() -> None:
    assert lost(server().receive_data(b"GET / HTTP/1.1\r\n\r\n")) == PROTOCOL_ERROR
    assert lost(server().receive_data(PREFACE + frame(6, 0, 0, b"12345678"))) == PROTOCOL_ERROR
    s = server()  # the preface may come in pieces
    assert s.receive_data(PREFACE[:5]) == []
    assert s.receive_data(PREFACE[5:] + frame(4, 0, 0)) == []


def test_data_beyond_the_windows_is_a_flow_control_error() -> None:
    pair = Pair()
    stream_id = pair.request(end=False)
    pair.client.local_settings  # noqa: B018 (h2 keeps no check of our window on its side)
    too_much = b"".join(frame(0, 0, stream_id, b"z" * 16384) for _ in range(65))
    assert lost(pair.to_server(too_much)) == FLOW_CONTROL_ERROR


def test_content_length_must_match_the_body() -> None:
    pair = Pair()
    stream_id = pair.request([*REQUEST, ("content-length", "3")], end=False)
    pair.client.send_data(stream_id, b"four", end_stream=False)
    assert lost(pair.to_server()) == PROTOCOL_ERROR
    pair = Pair()
    stream_id = pair.request([*REQUEST, ("content-length", "3")], end=False)
    pair.client.send_data(stream_id, b"ab", end_stream=True)
    assert lost(pair.to_server()) == PROTOCOL_ERROR


def test_an_endless_header_block_is_refused_without_a_guard() -> None:
    pair = Pair()  # no flood guard: the codec's own bound on CONTINUATION still holds
    flood = frame(1, 0, 1, b"\x82") + frame(9, 0, 1, b"\0" * 16384) * 6
    assert lost(pair.to_server(flood)) == ENHANCE_YOUR_CALM


def test_hostile_frames_are_refused_by_the_flood_guard() -> None:
    pair = Pair(guard=True)
    pings = b"".join(frame(6, 0, 0, b"12345678") for _ in range(1100))
    assert lost(pair.to_server(pings)) == ENHANCE_YOUR_CALM


# -- never more lenient than h2's server ------------------------------------------------------

_NAMES = st.sampled_from(
    [":method", ":scheme", ":authority", ":path", ":protocol", ":status", ":x", "host",
     "content-length", "te", "connection", "x-a", "X-Up", "a b", "", "a:b", "grpc-timeout"]
)  # fmt: skip
_VALUES = st.sampled_from(
    ["GET", "CONNECT", "http", "svc", "other", "/", "", "/p", "trailers", "gzip", "7", "x",
     " x", "x\t", "a\x00b", "a\rb", "websocket", "1,2"]
)  # fmt: skip


def h2_server_accepts(block: bytes) -> tuple[str, ...] | None:
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    peer = h2.connection.H2Connection(config)
    peer.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1}
    )
    peer.initiate_connection()
    try:
        events = peer.receive_data(PREFACE + frame(4, 0, 0) + frame(1, 5, 1, block))
    except h2.exceptions.ProtocolError:
        return None
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            return tuple(f"{n.decode('latin-1')}={v.decode('latin-1')}" for n, v in event.headers)
    return None


ACCEPTED: list[int] = []  # how many heads both accepted (the test below checks it is not 0)
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=7)


@st.composite
def _near_valid(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A valid request head (any method, pseudo-headers in any order) with a few fields
    inserted or replaced."""
    method = draw(st.sampled_from(["GET", "POST", "CONNECT"]))
    pseudo = [(":method", method), (":scheme", "http"), (":path", "/p"), (":authority", "svc")]
    fields = draw(st.permutations(pseudo)) + draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=3))
    for name, value in draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=2)):
        index = draw(st.integers(0, len(fields)))
        if draw(st.booleans()) and index < len(fields):
            fields[index] = (name, value)
        else:
            fields.insert(index, (name, value))
    return fields


@settings(max_examples=600, deadline=None)
@given(st.one_of(_FIELDS, _near_valid()))
def test_request_heads_never_accepted_where_h2_refuses(fields: list[tuple[str, str]]) -> None:
    block = hpack.Encoder().encode([(n.encode(), v.encode()) for n, v in fields])
    ours = server()
    ours.initiate()
    events = ours.receive_data(PREFACE + frame(4, 0, 0) + frame(1, 5, 1, block))
    heads = [e for e in events if isinstance(e, RequestReceived)]
    theirs = h2_server_accepts(block)
    if heads:
        assert theirs is not None, fields
        head = heads[0]
        mine = tuple(f"{k}={v}" for k, v in [*head.pseudo.items(), *head.headers])
        assert mine == theirs
        ACCEPTED.append(1)
    else:
        assert any(isinstance(e, ConnectionLost) for e in events)


_FRAME = st.builds(
    frame,
    st.integers(0, 10),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAME, max_size=12), st.binary(max_size=64), st.integers(1, 40))
def test_arbitrary_frames_never_raise(frames: list[bytes], tail: bytes, split: int) -> None:
    pair = Pair(guard=True)
    pair.request(end=False)
    data = b"".join(frames) + tail
    for start in range(0, len(data), split):
        pair.server.receive_data(data[start : start + split])
    pair.server.data_to_send()


def test_the_differential_saw_accepted_heads() -> None:
    """Guards the test above against only ever comparing refusals."""
    test_request_heads_never_accepted_where_h2_refuses()
    assert len(ACCEPTED) > 20
