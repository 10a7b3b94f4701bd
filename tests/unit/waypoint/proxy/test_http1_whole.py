"""A response whose whole body is in memory goes to an HTTP/1.x client in one write
(one HBONE DATA frame): the same bytes and the same checks as head, data and end."""

from __future__ import annotations

import asyncio

import pytest

from ambient.hbone.stream import HboneStream
from ambient.waypoint.proxy.h1codec import parse_request_head
from ambient.waypoint.proxy.h1wire import BodyReader, MessageReader
from ambient.waypoint.proxy.http1 import _Body, _Sink
from ambient.waypoint.proxy.messages import DownstreamGone, ResponseHead
from tests.unit.waypoint.proxy.recording import RecordingStream


def sink_for(request: bytes) -> tuple[_Sink, RecordingStream]:
    recording = RecordingStream()
    stream: HboneStream = recording  # type: ignore[assignment]
    parsed = parse_request_head(request, request.index(b"\r\n\r\n") + 4)
    reader = MessageReader(stream)
    body = _Body(stream, BodyReader(reader, parsed.framing, parsed.length), parsed)
    return _Sink(stream, parsed, body, reader), recording


GET = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"


def whole(request: bytes, head: ResponseHead, data: bytes) -> tuple[_Sink, list[bytes]]:
    sink, recording = sink_for(request)
    asyncio.run(sink.send_whole(head, data))
    return sink, recording.writes


def test_content_length_answer_is_one_write() -> None:
    sink, writes = whole(GET, ResponseHead(200, (("content-length", "5"),)), b"hello")
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    assert sink.complete and not sink.closing


def test_no_length_is_one_chunk_and_the_last_chunk() -> None:
    _, writes = whole(GET, ResponseHead(200, (("x-a", "1"),)), b"hello")
    assert writes == [b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\n"]  # fmt: skip


def test_http10_client_gets_the_bytes_and_a_close() -> None:
    request = b"GET / HTTP/1.0\r\nhost: a\r\n\r\n"
    sink, writes = whole(request, ResponseHead(200, (("x-a", "1"),)), b"hello")
    assert writes == [b"HTTP/1.1 200 OK\r\nx-a: 1\r\nconnection: close\r\n\r\nhello"]
    assert sink.closing


def test_head_request_gets_no_body() -> None:
    request = b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n"
    _, writes = whole(request, ResponseHead(200, (("content-length", "5"),)), b"hello")
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"]


@pytest.mark.parametrize("data", [b"hell", b"hello!"])
def test_a_body_that_does_not_match_its_length_is_never_sent(data: bytes) -> None:
    sink, recording = sink_for(GET)
    with pytest.raises(DownstreamGone):
        asyncio.run(sink.send_whole(ResponseHead(200, (("content-length", "5"),)), data))
    assert recording.writes == []  # nothing half-sent: the caller resets the stream
