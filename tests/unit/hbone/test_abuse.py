"""Abuse budgets of the sans-io HBONE core: rapid reset, control and idle floods, header blocks.

The attacker's frames are serialised with hyperframe/hpack, not with our own
client; the server is fed them as the network would (in one read, or byte by byte).
"""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from ambient.hbone import events as ev
from ambient.hbone.protocol import HboneConnection, HboneSettings, Side
from ambient.http2.guard import ENHANCE_YOUR_CALM, FloodGuard, FloodLimits, TokenBucket

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SMALL = FloodLimits(
    early_reset_burst=10, early_reset_rate=0.0, control_burst=10, control_rate=0.0,
    idle_burst=10, idle_rate=0.0,
)  # fmt: skip


def server(limits: FloodLimits = SMALL, **settings: int) -> HboneConnection:
    conn = HboneConnection(Side.SERVER, HboneSettings(limits=limits, **settings))
    conn.initiate()
    conn.data_to_send()
    assert conn.receive_data(PREFACE + SettingsFrame(0).serialize()) == []
    conn.data_to_send()
    return conn


def connect(encoder: hpack.Encoder, stream_id: int) -> bytes:
    block = encoder.encode([(":method", "CONNECT"), (":authority", "10.0.0.7:8080")])
    return HeadersFrame(stream_id, data=block, flags={"END_HEADERS"}).serialize()


def goaway_code(wire: bytes) -> int | None:
    """The error code of the GOAWAY in ``wire`` (frames we sent), if any."""
    pos = 0
    while pos + 9 <= len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "big")
        if wire[pos + 3] == 0x7:
            return int.from_bytes(wire[pos + 13 : pos + 17], "big")
        pos += 9 + length
    return None


def failed(events: list[ev.Event]) -> bool:
    return any(isinstance(e, ev.ConnectionFailed) for e in events)


def test_rapid_reset_ends_in_goaway_enhance_your_calm() -> None:
    conn = server()
    encoder = hpack.Encoder()
    wire = b"".join(
        connect(encoder, sid) + RstStreamFrame(sid, error_code=8).serialize()
        for sid in range(1, 2 * 50, 2)
    )
    events = conn.receive_data(wire)
    assert failed(events)
    assert "rapid reset" in (conn.failed or "")
    assert goaway_code(conn.data_to_send()) == ENHANCE_YOUR_CALM
    # A CONNECT reset in the same read as it arrived is never reported: no work starts.
    assert not any(isinstance(e, ev.ConnectReceived) for e in events)


def test_streams_reset_after_their_answer_are_not_early() -> None:
    conn = server()
    encoder = hpack.Encoder()
    for sid in range(1, 2 * 50, 2):
        events = conn.receive_data(connect(encoder, sid))
        assert events == [ev.ConnectReceived(sid, events[0].request)]  # type: ignore[union-attr]
        conn.respond(sid, 200)
        events = conn.receive_data(RstStreamFrame(sid, error_code=8).serialize())
        assert events == [ev.StreamReset(sid, 8, True)]
    assert conn.failed is None


def test_a_reset_in_a_later_read_is_reported_and_counted() -> None:
    conn = server()
    encoder = hpack.Encoder()
    for sid in range(1, 2 * 10, 2):
        assert isinstance(conn.receive_data(connect(encoder, sid))[0], ev.ConnectReceived)
        assert conn.receive_data(RstStreamFrame(sid, error_code=8).serialize()) == [
            ev.StreamReset(sid, 8, True)
        ]
    assert conn.failed is None  # ten: the whole burst
    conn.receive_data(connect(encoder, 21))
    assert failed(conn.receive_data(RstStreamFrame(21, error_code=8).serialize()))


@pytest.mark.parametrize(
    "frame",
    [
        PingFrame(0, opaque_data=b"12345678"),
        SettingsFrame(0, settings={}),
        SettingsFrame(0, settings={4: 70000}),
    ],
    ids=["ping", "settings", "settings-window"],
)
def test_control_flood_ends_in_goaway(frame: PingFrame | SettingsFrame) -> None:
    conn = server()
    events = conn.receive_data(frame.serialize() * 11)
    assert failed(events)
    assert goaway_code(conn.data_to_send()) == ENHANCE_YOUR_CALM


def test_control_budget_counts_each_frame_once_when_fed_byte_by_byte() -> None:
    conn = server()  # the client's SETTINGS took one token of ten
    wire = PingFrame(0, opaque_data=b"12345678").serialize() * 9
    for i in range(len(wire)):
        assert conn.receive_data(wire[i : i + 1]) == []
    assert conn.reply_bytes == 9 + 9 * 17  # the SETTINGS ACK, then nine PING ACKs
    assert conn.failed is None
    conn.receive_data(PingFrame(0, opaque_data=b"12345678").serialize())
    assert conn.failed is not None


@pytest.mark.parametrize(
    "frame",
    [
        PriorityFrame(1, depends_on=0),
        DataFrame(1, data=b""),
    ],
    ids=["priority", "empty-data"],
)
def test_idle_frame_flood_ends_in_goaway(frame: PriorityFrame | DataFrame) -> None:
    conn = server()
    encoder = hpack.Encoder()
    conn.receive_data(connect(encoder, 1))
    conn.respond(1, 200)
    events = conn.receive_data(frame.serialize() * 11)
    assert failed(events)
    assert goaway_code(conn.data_to_send()) == ENHANCE_YOUR_CALM


def test_window_updates_are_not_budgeted() -> None:
    conn = server()
    wire = WindowUpdateFrame(0, window_increment=1).serialize() * 100
    assert conn.receive_data(wire) == []
    assert conn.failed is None


def test_unasked_acknowledgements_are_idle_frames() -> None:
    conn = server()
    events = conn.receive_data(
        PingFrame(0, opaque_data=b"12345678", flags={"ACK"}).serialize() * 11
    )
    assert failed(events)


def test_header_block_over_the_list_size_is_refused_on_its_frame_header() -> None:
    """A CONTINUATION frame that would take the block past the advertised header list
    size fails the connection from its 9-byte header, before any payload arrived."""
    conn = server(max_header_list_size=16 * 1024)
    encoder = hpack.Encoder()
    block = encoder.encode([(":method", "CONNECT"), (":authority", "10.0.0.7:8080")])
    assert conn.receive_data(HeadersFrame(1, data=block).serialize()) == []
    header_only = ContinuationFrame(1, data=b"x" * 20000).serialize()[:9]
    events = conn.receive_data(header_only)
    assert failed(events)
    assert "header list size" in (conn.failed or "")
    assert goaway_code(conn.data_to_send()) == ENHANCE_YOUR_CALM


def test_a_header_block_within_the_limit_over_many_continuations_is_accepted() -> None:
    conn = server(max_header_list_size=16 * 1024)
    encoder = hpack.Encoder()
    block = encoder.encode(
        [(":method", "CONNECT"), (":authority", "10.0.0.7:8080"), ("baggage", "k=" + "v" * 12000)]
    )
    pieces = [block[i : i + 1000] for i in range(0, len(block), 1000)]
    wire = HeadersFrame(1, data=pieces[0]).serialize()
    for piece in pieces[1:-1]:
        wire += ContinuationFrame(1, data=piece).serialize()
    wire += ContinuationFrame(1, data=pieces[-1], flags={"END_HEADERS"}).serialize()
    events = conn.receive_data(wire)
    assert [type(e) for e in events] == [ev.ConnectReceived]


def test_a_single_headers_frame_over_the_limit_is_refused() -> None:
    conn = server(max_header_list_size=16 * 1024)
    events = conn.receive_data(
        HeadersFrame(1, data=b"x" * 17000, flags={"END_HEADERS"}).serialize()[:9]
    )
    assert failed(events)


def test_client_side_is_guarded_too() -> None:
    """A malicious server flooding PINGs at our client gets GOAWAY as well."""
    client = HboneConnection(Side.CLIENT, HboneSettings(limits=SMALL))
    client.initiate()
    client.data_to_send()
    events = client.receive_data(
        SettingsFrame(0).serialize() + PingFrame(0, opaque_data=b"12345678").serialize() * 20
    )
    assert failed(events)
    assert goaway_code(client.data_to_send()) == ENHANCE_YOUR_CALM


# -- the guard on its own ----------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 1.0, lambda: now[0])
    assert bucket.take() and bucket.take() and not bucket.take()
    now[0] += 0.5
    assert not bucket.take()
    now[0] += 0.5
    assert bucket.take() and not bucket.take()
    now[0] += 3600  # idle for long: the burst, never more
    assert bucket.take() and bucket.take() and not bucket.take()


def test_scan_finds_frame_headers_split_anywhere() -> None:
    guard = FloodGuard(SMALL, 16 * 1024, preface=True)
    wire = (
        PREFACE
        + SettingsFrame(0).serialize()
        + PingFrame(0, opaque_data=b"8bytes!!").serialize() * 9
    )
    for i in range(len(wire)):
        guard.scan(wire[i : i + 1])
    with pytest.raises(Exception, match="PING/SETTINGS"):
        guard.scan(PingFrame(0, opaque_data=b"8bytes!!").serialize())
