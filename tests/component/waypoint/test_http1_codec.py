"""HTTP/1.x through the real waypoint on its one codec: hostile input, chunked, pipelining,
HTTP/1.0 and Expect: 100-continue.

Raw bytes over a real HBONE tunnel (mTLS, HTTP/2 CONNECT) to the waypoint,
which forwards to the app pods through their ztunnel.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from tests.component.waypoint.harness import ORDERS, WAYPOINT_IP, WEB, WaypointMesh

TARGET = SocketAddress(ORDERS.addresses[0], 80)


async def tunnel(mesh: WaypointMesh, pool: ConnectionPool) -> Any:
    return await pool.open_stream(
        source=mesh.web_cert,
        destination=SocketAddress(WAYPOINT_IP, 15008),
        expected=[mesh.waypoint.identity],
        request=ConnectRequest(TARGET, forwarded_for=SocketAddress(WEB.addresses[0], 40000)),
    )


class Responses:
    """Reads responses (Content-Length or chunked bodies) from a stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""

    async def _more(self) -> None:
        data = await self.stream.read()
        assert data, f"stream ended; buffered {self.buffer[:200]!r}"
        self.buffer += data

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._more()
        line, self.buffer = self.buffer.split(marker, 1)
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def next(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        head = await self._until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        if head_only or status in (100, 204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, await self._exactly(int(headers["content-length"]))
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while size := int((await self._until(b"\r\n")).split(b";")[0], 16):
            body += await self._exactly(size)
            assert await self._exactly(2) == b"\r\n"
        assert await self._until(b"\r\n") == b""
        return status, headers, body

    async def closed(self) -> bool:
        """True when the waypoint ends the stream with nothing more."""
        rest = self.buffer
        while data := await self.stream.read():
            rest += data
        return rest == b""


SMUGGLING = b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (SMUGGLING, 400),
        # Expect and HTTP/1.0 are on the same strict codec (h11 used to take these)
        (SMUGGLING.replace(b"\r\n\r\n", b"\r\nexpect: 100-continue\r\n\r\n", 1), 400),
        (SMUGGLING.replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
        (b"GET /hello HTTP/1.0\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nhost: orders\r\nx: a\r\n folded\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nhost: orders\r\nx : a\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nhost: orders\r\nx: a\rb\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nx: a\r\n\r\n", 400),
        (b"POST /hello HTTP/1.1\r\nhost: orders\r\ntransfer-encoding: gzip\r\n\r\n", 501),
        (b"GET /hello HTTP/1.1\r\nhost: orders\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        # Only SP and HTAB are whitespace around a value: NBSP and NEL are not (as h11).
        (b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: \xa05\r\n\r\nhello", 400),
        (b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: 5\xa0\r\n\r\nhello", 400),
        (b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: \x855\r\n\r\nhello", 400),
        (b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: 5,\xa05\r\n\r\nhello", 400),
        (b"POST /hello HTTP/1.1\r\nhost: orders\r\ncontent-length: \xb2\r\n\r\nhello", 400),
    ],
)
async def test_hostile_requests_are_refused_and_the_connection_closed(
    mesh: WaypointMesh, raw: bytes, status: int
) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        stream.write(raw + b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")  # never served
        responses = Responses(stream)
        got, headers, _ = await responses.next()
        assert got == status
        assert headers["connection"] == "close"
        assert await responses.closed()
    finally:
        await pool.close()
    assert not any(a.requests for a in mesh.apps)  # nothing reached the app


async def test_chunked_upload_pipelining_head_and_chunked_answer(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        # Three requests in one write: a chunked upload, a HEAD, a Content-Length POST.
        stream.write(
            b"POST /hello HTTP/1.1\r\nhost: orders\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n"
            b"HEAD /hello HTTP/1.1\r\nhost: orders\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nhost: orders\r\ncontent-length: 11\r\n\r\nhello world"
        )
        responses = Responses(stream)
        status, _, body = await responses.next()
        assert status == 200 and json.loads(body)["received"] == 8
        status, headers, _ = await responses.next(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0  # the GET's length, no body
        status, headers, body = await responses.next()  # the echo answers without a length
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"hello world")
        stream.write_eof()
        assert await responses.closed()
    finally:
        await pool.close()
    seen = [r for a in mesh.apps for r in a.requests]
    assert len(seen) == 3
    upload = next(r for r in seen if r["path"] == "/hello" and "transfer-encoding" in r["headers"])
    assert "content-length" not in upload["headers"]


async def test_http10_and_expect_continue(mesh: WaypointMesh) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        stream.write(
            b"POST /hello HTTP/1.1\r\nhost: orders\r\nexpect: 100-continue\r\n"
            b"content-length: 4\r\n\r\n"
        )
        responses = Responses(stream)
        status, _, _ = await responses.next()
        assert status == 100
        stream.write(b"body")
        status, _, body = await responses.next()
        assert status == 200 and json.loads(body)["received"] == 4
        stream.write(b"GET /hello HTTP/1.0\r\nhost: orders\r\n\r\n")
        status, _, body = await responses.next()
        assert status == 200 and json.loads(body)["path"] == "/hello"
        assert await responses.closed()  # HTTP/1.0 without keep-alive: the waypoint closes
    finally:
        await pool.close()


async def test_http10_gets_a_close_delimited_body_and_no_chunks(mesh: WaypointMesh) -> None:
    """HTTP/1.0 has no chunked coding: a response without a length ends with the connection."""
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        stream.write(b"POST /echo HTTP/1.0\r\nhost: orders\r\ncontent-length: 5\r\n\r\nhello")
        received = b""
        while data := await stream.read():
            received += data
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        assert lines[0].startswith("http/1.1 200")
        assert "connection: close" in lines and not any("transfer-encoding" in x for x in lines)
        assert body == b"hello"
    finally:
        await pool.close()


async def test_expect_continue_is_answered_once_and_only_when_the_body_is_wanted(
    mesh: WaypointMesh,
) -> None:
    pool = ConnectionPool()
    try:
        stream = await tunnel(mesh, pool)
        responses = Responses(stream)
        # A body sent with the head: no 100 (the client is not waiting for one).
        stream.write(
            b"POST /hello HTTP/1.1\r\nhost: orders\r\nexpect: 100-continue\r\n"
            b"content-length: 2\r\n\r\nhi"
        )
        status, _, body = await responses.next()
        assert status == 200 and json.loads(body)["received"] == 2
        # A request refused before its body is needed: no 100 either, a final answer.
        stream.write(
            b"POST /hello HTTP/1.1\r\nhost: orders\r\nexpect: 100-continue\r\n"
            b"upgrade: bogus\r\nconnection: upgrade\r\ncontent-length: 0\r\n\r\n"
        )
        status, _, _ = await responses.next()
        assert status == 403
    finally:
        await pool.close()
