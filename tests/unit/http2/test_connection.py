"""The shared HTTP/2 core (``h2conn``) as both codecs run it, where the role tests leave it out.

Each test runs once as the waypoint's client codec and once as its server codec,
fed raw frames after a real handshake: the connection window granted back in
halves across streams, padding, header blocks across CONTINUATION, and the one
policy that differs by role (a violation on one stream: the client resets the
stream, the server ends the connection). Whether each role runs its own copy of
the core's code (for CPython's per-site specialisation) is checked too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import hpack
import pytest

from ambient.http2.connection import H2Connection
from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    H2Event,
    HeadersReceived,
    RequestReceived,
    StreamReset,
)
from ambient.waypoint.proxy.h2client import H2Client
from ambient.waypoint.proxy.h2server import H2Server
from tests.unit.waypoint.proxy.test_h2server import frame, frames

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 2, 3, 4, 6, 7, 8, 9
)  # fmt: skip
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 1, 3
STREAM_WINDOW, CONNECTION_WINDOW = 65536, 131072
REQUEST = [(":method", "POST"), (":scheme", "http"), (":authority", "svc:80"), (":path", "/x")]


@dataclass
class Open:
    """A codec of one role with stream 1 open both ways, and what the peer sent to open it."""

    codec: H2Client | H2Server
    head: list[tuple[str, str]]  # the peer's head on stream 1
    encoder: hpack.Encoder

    def feed(self, *raw: bytes) -> Sequence[H2Event]:
        return self.codec.receive_data(b"".join(raw))

    def sent(self) -> list[tuple[int, int, int, bytes]]:
        return frames(self.codec.data_to_send())


def open_stream(role: str) -> Open:
    encoder = hpack.Encoder()
    codec: H2Client | H2Server
    if role == "client":
        client = H2Client(STREAM_WINDOW, CONNECTION_WINDOW)
        client.initiate()
        client.send_headers(client.open_stream(), REQUEST, False)
        head = [(":status", "200")]
        events = client.receive_data(
            frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, encoder.encode(head))
        )
        assert isinstance(events[-1], HeadersReceived), events
        codec = client
    else:
        server = H2Server(
            stream_window=STREAM_WINDOW,
            connection_window=CONNECTION_WINDOW,
            max_streams=10,
            max_header_list=65536,
        )
        server.initiate()
        head = REQUEST
        requests = server.receive_data(
            PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, encoder.encode(head))
        )
        assert isinstance(requests[-1], RequestReceived), requests
        codec = server
    codec.data_to_send()
    return Open(codec, head, encoder)


ROLES = pytest.mark.parametrize("role", ["client", "server"])


@ROLES
def test_windows_are_granted_back_in_halves_stream_and_connection(role: str) -> None:
    pair = open_stream(role)
    updates = []
    for _ in range(5):  # 5 x 16 KiB: past half the stream window twice, the connection's once
        (event,) = pair.feed(frame(DATA, 0, 1, bytes(16384)))
        assert isinstance(event, DataReceived) and event.flow == 16384
        pair.codec.acknowledge(1, event.flow)
        updates += [
            (stream_id, struct.unpack(">I", payload)[0])
            for kind, _, stream_id, payload in pair.sent()
            if kind == WINDOW_UPDATE
        ]
    assert updates == [(1, 32768), (0, 65536), (1, 32768)]
    assert pair.codec.describe() == {
        "windows": [65535, CONNECTION_WINDOW - 16384],
        "streams": {1: [65535, STREAM_WINDOW - 16384]},
    }


@ROLES
def test_padding_counts_for_flow_control_but_is_not_data(role: str) -> None:
    pair = open_stream(role)
    (event,) = pair.feed(frame(DATA, PADDED, 1, b"\x03abc\x00\x00\x00"))
    assert isinstance(event, DataReceived)
    assert (event.data, event.flow) == (b"abc", 7)
    (lost,) = pair.feed(frame(DATA, PADDED, 1, b"\x07abc"))
    assert isinstance(lost, ConnectionLost) and lost.error_code == PROTOCOL_ERROR
    assert pair.codec.dead
    assert [(kind, stream_id) for kind, _, stream_id, _ in pair.sent()] == [(GOAWAY, 0)]


@ROLES
def test_a_header_block_across_continuation_frames(role: str) -> None:
    pair = open_stream(role)
    trailers = pair.encoder.encode([("grpc-status", "0"), ("x-long", "v" * 40)])
    events = pair.feed(
        frame(HEADERS, END_STREAM, 1, trailers[:10]),
        frame(CONTINUATION, 0, 1, trailers[10:20]),
        frame(CONTINUATION, END_HEADERS, 1, trailers[20:]),
    )
    assert len(events) == 1 and isinstance(events[0], HeadersReceived), events
    assert events[0].trailers and events[0].end_stream
    assert events[0].headers == (("grpc-status", "0"), ("x-long", "v" * 40))


@ROLES
def test_a_header_block_interrupted_is_a_connection_error(role: str) -> None:
    pair = open_stream(role)
    block = pair.encoder.encode([("grpc-status", "0")])
    (lost,) = pair.feed(frame(HEADERS, END_STREAM, 1, block), frame(PING, 0, 0, bytes(8)))
    assert isinstance(lost, ConnectionLost) and lost.error_code == PROTOCOL_ERROR
    assert lost.reason == "a header block was interrupted"


@pytest.mark.parametrize(
    ("increment", "code"), [(0, PROTOCOL_ERROR), (2**31 - 1, FLOW_CONTROL_ERROR)]
)
def test_a_bad_stream_window_update_resets_the_clients_stream(increment: int, code: int) -> None:
    pair = open_stream("client")
    events = pair.feed(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", increment)))
    assert [(type(e), e.stream_id, e.error_code) for e in events if isinstance(e, StreamReset)] == [
        (StreamReset, 1, code)
    ]
    assert not pair.codec.dead
    assert [(k, s, p) for k, _, s, p in pair.sent()] == [(RST_STREAM, 1, struct.pack(">I", code))]


@pytest.mark.parametrize(
    ("increment", "code"), [(0, PROTOCOL_ERROR), (2**31 - 1, FLOW_CONTROL_ERROR)]
)
def test_a_bad_stream_window_update_ends_the_servers_connection(increment: int, code: int) -> None:
    """Envoy's default (and h2's): a violation on a stream is a connection error."""
    pair = open_stream("server")
    (lost,) = pair.feed(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", increment)))
    assert isinstance(lost, ConnectionLost) and lost.error_code == code
    ((kind, _, stream_id, payload),) = pair.sent()
    assert (kind, stream_id) == (GOAWAY, 0)
    assert struct.unpack_from(">II", payload) == (1, code)
    assert payload[8:] == lost.reason.encode()  # the reason goes out as debug data


def test_a_stream_depending_on_itself_resets_the_clients_stream() -> None:
    """RFC 9113 5.3.1: a stream error, in HEADERS' priority fields or a PRIORITY frame."""
    for raw in (
        frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 15)),
        frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1,
              struct.pack(">IB", 1, 15) + hpack.Encoder().encode([("grpc-status", "0")])),
    ):  # fmt: skip
        pair = open_stream("client")
        assert pair.feed(raw) == [StreamReset(1, PROTOCOL_ERROR, local=True)]
        assert not pair.codec.dead
        assert pair.sent() == [(RST_STREAM, 0, 1, struct.pack(">I", PROTOCOL_ERROR))]
    # a PRIORITY may name a stream we never opened: nothing to reset, nothing to report
    assert pair.feed(frame(PRIORITY, 0, 3, struct.pack(">IB", 3, 15))) == []
    assert pair.sent() == [] and not pair.codec.dead


def test_a_stream_depending_on_itself_ends_the_servers_connection() -> None:
    pair = open_stream("server")
    trailers = pair.encoder.encode([("x-end", "1")])
    (lost,) = pair.feed(
        frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1,
              struct.pack(">IB", 1, 15) + trailers)
    )  # fmt: skip
    assert isinstance(lost, ConnectionLost) and lost.error_code == PROTOCOL_ERROR
    assert [kind for kind, _, _, _ in pair.sent()] == [GOAWAY]


@ROLES
def test_an_initial_window_that_overflows_a_stream_window_is_a_connection_error(
    role: str,
) -> None:
    """RFC 9113 6.9.2: FLOW_CONTROL_ERROR for the connection, whichever role."""
    pair = open_stream(role)
    full = 2**31 - 1 - 65535  # stream 1's send window at the maximum
    assert pair.feed(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", full)))
    assert pair.codec.window(1) == 65535  # the connection window still bounds it
    shrink = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0))  # a window may go negative
    assert not any(isinstance(e, ConnectionLost) for e in pair.feed(shrink))
    (lost,) = [
        e
        for e in pair.feed(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65536)))
        if isinstance(e, ConnectionLost)
    ]
    assert lost.error_code == FLOW_CONTROL_ERROR and pair.codec.dead
    assert [kind for kind, _, _, _ in pair.sent()][-1] == GOAWAY


@pytest.mark.parametrize(
    "first",
    [
        frame(PING, 0, 0, bytes(8)),
        frame(SETTINGS, 1, 0),  # an ACK is not the server's SETTINGS
        frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000)),
    ],
    ids=["ping", "settings-ack", "window-update"],
)
def test_the_servers_first_frame_must_be_settings(first: bytes) -> None:
    """RFC 9113 3.4: the server's connection preface is a SETTINGS frame."""
    client = H2Client(STREAM_WINDOW, CONNECTION_WINDOW)
    client.initiate()
    client.send_headers(client.open_stream(), REQUEST, True)
    client.data_to_send()
    assert client.receive_data(first[:4]) == []  # a frame in pieces is awaited
    (lost,) = client.receive_data(first[4:])
    assert isinstance(lost, ConnectionLost) and lost.error_code == PROTOCOL_ERROR
    assert [(kind, s) for kind, _, s, _ in frames(client.data_to_send())] == [(GOAWAY, 0)]


@ROLES
@pytest.mark.parametrize("how", ["closed", "lost"])
def test_nothing_is_written_once_the_connection_is_over(role: str, how: str) -> None:
    pair = open_stream(role)
    if how == "closed":
        pair.codec.close()
    else:
        assert isinstance(pair.feed(frame(DATA, 0, 0, b"x"))[-1], ConnectionLost)
    pair.sent()
    pair.codec.reset(1, PROTOCOL_ERROR)
    pair.codec.acknowledge(1, STREAM_WINDOW)
    assert pair.codec.data_to_send() == b""


def test_each_role_runs_its_own_copy_of_the_core() -> None:
    for name in ("receive_data", "acknowledge", "_on_frame", "_on_data", "_unpad"):
        client, server = getattr(H2Client, name), getattr(H2Server, name)
        core = getattr(H2Connection, name)
        assert client.__code__ is not server.__code__, name
        assert client.__code__ is not core.__code__, name
        assert client.__code__.co_code == core.__code__.co_code, name
        assert client.__code__.co_filename == core.__code__.co_filename  # tracebacks: h2conn
        assert client.__qualname__ == core.__qualname__


class _BigFrames(H2Client):
    """The client codec accepting frames up to ``max_frame_size`` (the core's parameter)."""

    def __init__(self, max_frame_size: int) -> None:
        super().__init__(STREAM_WINDOW, CONNECTION_WINDOW)  # the client's own state, then
        H2Connection.__init__(  # the core's again, with the parameter
            self, STREAM_WINDOW, CONNECTION_WINDOW, 65536, None, max_frame_size=max_frame_size
        )


def test_the_largest_frame_accepted_is_a_parameter() -> None:
    """16 KiB by default (FRAME_SIZE_ERROR beyond); a role may accept up to 2^24-1."""
    encoder = hpack.Encoder()
    status = encoder.encode([(":status", "200")])
    head = frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, status)
    for size in (16384, 65536):
        client = _BigFrames(size)
        client.initiate()
        client.send_headers(client.open_stream(), REQUEST, False)
        assert isinstance(client.receive_data(head)[-1], HeadersReceived)
        events = client.receive_data(frame(DATA, 0, 1, bytes(32768)))
        if size >= 32768:
            assert isinstance(events[-1], DataReceived) and events[-1].flow == 32768
        else:
            assert isinstance(events[-1], ConnectionLost) and events[-1].error_code == 6
    with pytest.raises(ValueError, match="max_frame_size"):
        _BigFrames(1000)
