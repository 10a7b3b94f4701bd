"""HTTP/1.1 per-connection head memo (``h1wire.MessageReader``) and the upstream exchange's
resend on a fresh connection (``UpstreamClient``)."""

from __future__ import annotations

import asyncio
import collections
from ipaddress import ip_address

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.state.workload import TunnelProtocol, Workload
from ambient.waypoint.proxy.balancer import Endpoint
from ambient.waypoint.proxy.h1codec import Framing, parse_request_head, parse_response_head
from ambient.waypoint.proxy.h1wire import MessageReader
from ambient.waypoint.proxy.messages import BytesBody, ConnectionSettings, UpstreamRequest
from ambient.waypoint.proxy.upstream import UpstreamClient, _Connection

GET = b"GET /a HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


def reader(data: bytes) -> MessageReader:
    return MessageReader(None, data)  # type: ignore[arg-type]


def test_same_request_head_is_parsed_once() -> None:
    r = reader(GET + GET)
    first = r.request_head(len(GET))
    assert first == parse_request_head(GET, len(GET))
    r.consume(len(GET))
    assert r.request_head(len(GET)) is first  # the same bytes: the same (unchanged) result


def test_a_different_request_head_is_parsed_again() -> None:
    other = GET.replace(b"length: 3", b"length: 4")
    r = reader(GET + other)
    first = r.request_head(len(GET))
    r.consume(len(GET))
    second = r.request_head(len(other))
    assert second is not first and second.length == 4 and first.length == 3
    assert second == parse_request_head(other, len(other))


def test_response_memo_is_keyed_by_method_too() -> None:
    r = reader(OK + OK)
    get = r.response_head(len(OK), "GET")
    assert get.framing is Framing.LENGTH and get.length == 5
    head = r.response_head(len(OK), "HEAD")  # same bytes, but a HEAD answer has no body
    assert head.framing is Framing.NONE and head == parse_response_head(OK, len(OK), "HEAD")
    assert r.response_head(len(OK), "HEAD") is head


def test_a_refused_head_is_not_kept() -> None:
    bad = b"GET /a HTTP/1.1\r\nhost: h\r\nhost: i\r\n\r\n"
    r = reader(GET + bad)
    r.request_head(len(GET))
    r.consume(len(GET))
    for _ in range(2):
        try:
            r.request_head(len(bad))
        except Exception as exc:
            assert "multiple Host" in str(exc)
        else:
            raise AssertionError("accepted a head with two Host fields")


class _Stream:
    """An upstream HBONE stream: writes fail (``broken``) or are kept; reads give ``replies``."""

    def __init__(self, replies: list[bytes], *, broken: bool = False) -> None:
        self.broken = broken
        self.writes: list[bytes] = []
        self.replies = collections.deque(replies)
        self.closed = False
        self.at_eof = False

    def write(self, data: bytes) -> None:
        if self.broken:
            raise HboneError("connection closed")
        self.writes.append(bytes(data))

    async def read(self, _max: int = -1) -> bytes:
        return self.replies.popleft() if self.replies else b""

    def reset(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.closed = True


def test_a_whole_body_is_resent_whole_on_a_fresh_connection() -> None:
    """A reused idle connection the server had closed fails at the write: the request goes
    again on a fresh connection, with its body (it was once sent as ``content-length: 0``)."""
    fresh = _Stream([OK + b"hello"])

    class Client(UpstreamClient):
        async def open_with(self, endpoint: Endpoint, settings: ConnectionSettings) -> HboneStream:
            return fresh  # type: ignore[return-value]

    async def run() -> bytes:
        client = Client(None)  # type: ignore[arg-type]
        ip = ip_address("10.0.0.1")
        pod = Workload("k//Pod/n/w", "w", "n", (ip,), "w", "node", TunnelProtocol.HBONE)
        endpoint = Endpoint(pod, ip, 80)
        idle = _Connection(_Stream([], broken=True), ConnectionSettings())  # type: ignore[arg-type]
        idle.requests = 1
        client.put_idle(endpoint, idle)
        request = UpstreamRequest("POST", "/", "svc", (("x-a", "1"),), "HTTP/1.1")
        head, body = await client.send(endpoint, request, BytesBody(b"abc"))
        assert head.status == 200
        return await body.read()

    assert asyncio.run(run()) == b"hello"
    assert fresh.writes == [
        b"POST / HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\ncontent-length: 3\r\n\r\nabc"
    ]


def test_response_head_written_again_only_when_it_changes() -> None:
    r = reader(b"")
    headers = (("content-length", "5"), ("x-a", "1"))
    first = r.response_head_bytes(200, headers)
    assert first == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\n"
    assert r.response_head_bytes(200, tuple(headers)) is first  # equal, not the same tuple
    assert r.response_head_bytes(404, headers).startswith(b"HTTP/1.1 404 Not Found\r\n")
    changed = r.response_head_bytes(200, (("content-length", "6"), ("x-a", "1")))
    assert changed == b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-a: 1\r\n\r\n"
    for bad in ((("x-a", "1\r\nx-b: 2"),), (("x:a", "1"),)):
        for _ in range(2):  # a refused head is not kept, and refused again
            try:
                r.response_head_bytes(200, bad)
            except Exception as exc:
                assert "malformed" in str(exc)
            else:
                raise AssertionError(f"wrote {bad!r}")
