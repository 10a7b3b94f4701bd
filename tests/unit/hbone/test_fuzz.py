"""Hostile input against the sans-io HBONE core: it must never crash, hang or grow unbounded."""

from __future__ import annotations

import tracemalloc
import typing

import hpack
import hyperframe.frame as hf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.hbone import events as ev
from ambient.hbone.protocol import HboneConnection, Side

from .pair import TARGET, Pair, raw_client

EVENT_TYPES = typing.get_args(ev.Event)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _server_after_preface() -> tuple[HboneConnection, bytes]:
    raw = raw_client()
    server = HboneConnection(Side.SERVER)
    server.initiate()
    preface = raw.data_to_send()
    return server, preface


def _feed(conn: HboneConnection, data: bytes, cuts: list[int]) -> list[ev.Event]:
    events: list[ev.Event] = []
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        events += conn.receive_data(data[start:cut])
        conn.data_to_send()
        start = cut
    for event in events:
        assert isinstance(event, EVENT_TYPES)
    return events


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_after_preface(noise: bytes, cuts: list[int]) -> None:
    server, preface = _server_after_preface()
    _feed(server, preface + noise, cuts)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_instead_of_preface(noise: bytes) -> None:
    server = HboneConnection(Side.SERVER)
    server.initiate()
    _feed(server, noise, [])


stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1])
payloads = st.binary(max_size=300)

# Payload lengths each frame type expects, so that frames get past length checks.
_SHAPES = {
    0x0: None,
    0x1: None,
    0x2: 5,
    0x3: 4,
    0x4: 6,
    0x5: None,
    0x6: 8,
    0x7: 8,
    0x8: 4,
    0x9: None,
}


def _frames() -> st.SearchStrategy[bytes]:
    """Raw frames: any type (known or not), any flags, any stream id, plausible lengths."""

    def build(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        size = _SHAPES.get(kind)
        if size is not None:
            payload = payload[:size].ljust(size, b"\0")
        return (
            len(payload).to_bytes(3, "big")
            + bytes([kind, flags])
            + sid.to_bytes(4, "big")
            + payload
        )

    kinds = st.sampled_from([*_SHAPES, 0x20, 0xFF])
    return st.builds(build, kinds, st.integers(0, 255), stream_ids, payloads)


@FUZZ
@given(st.lists(_frames(), max_size=30), st.booleans())
def test_random_frames_on_an_open_tunnel(frames: list[bytes], client_side: bool) -> None:
    pair = Pair()
    pair.open()
    target = pair.client if client_side else pair.server
    _feed(target, b"".join(frames), [])


@FUZZ
@given(st.integers(min_value=0), st.lists(st.integers(min_value=0), max_size=10))
def test_truncated_sessions(cut: int, chunking: list[int]) -> None:
    """A real session's bytes, cut anywhere and delivered in arbitrary pieces."""
    pair = Pair()
    sid = pair.client.open_stream(TARGET)
    pair.client.send(sid, b"hello" * 100)
    pair.client.end_stream(sid)
    session = pair.client.data_to_send()
    server = HboneConnection(Side.SERVER)
    server.initiate()
    fresh = HboneConnection(Side.CLIENT)
    fresh.initiate()
    sid2 = fresh.open_stream(TARGET)
    fresh.send(sid2, b"hello" * 100)
    fresh.end_stream(sid2)
    session = fresh.data_to_send()
    _feed(server, session[: cut % (len(session) + 1)], chunking)


def test_endless_continuation_frames_stay_bounded() -> None:
    """A header block that never ends (CONTINUATION flood) is cut off without hoarding memory."""
    server, preface = _server_after_preface()
    server.receive_data(preface)
    head = hf.HeadersFrame(1, data=b"\x82" * 1000).serialize()
    cont = hf.ContinuationFrame(1, data=b"\x00" * 16000).serialize()
    tracemalloc.start()
    try:
        events = server.receive_data(head)
        for _ in range(700):  # ~11 MB offered
            events += server.receive_data(cont)
            if any(isinstance(e, ev.ConnectionFailed) for e in events):
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert any(isinstance(e, ev.ConnectionFailed) for e in events)
    assert peak < 4 * 1024 * 1024


def test_oversized_frame_is_refused_before_it_is_buffered() -> None:
    server, preface = _server_after_preface()
    server.receive_data(preface)
    header = (16 * 1024 * 1024 - 1).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01"
    events = server.receive_data(header + b"\x00" * 100)
    assert isinstance(events[-1], ev.ConnectionFailed)
    assert "frame" in events[-1].reason.lower()


def test_stream_flood_is_bounded_by_max_concurrent_streams() -> None:
    """A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS is cut off at the limit."""
    server, preface = _server_after_preface()
    server.receive_data(preface)
    encoder = hpack.Encoder()
    events: list[ev.Event] = []
    for i in range(1100):
        block = encoder.encode([(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
        frame = hf.HeadersFrame(2 * i + 1, data=block)
        frame.flags.add("END_HEADERS")
        events += server.receive_data(frame.serialize())
        if any(isinstance(e, ev.ConnectionFailed) for e in events):
            break
    opened = sum(isinstance(e, ev.ConnectReceived) for e in events)
    assert opened <= 1000
    assert any(isinstance(e, ev.ConnectionFailed) for e in events)
