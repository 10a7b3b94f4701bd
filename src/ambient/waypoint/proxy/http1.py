"""HTTP/1.x clients inside a tunnel: keep-alive, streaming bodies both ways, 100-continue.

One request at a time per tunnel (HTTP/1.1 has no multiplexing; pipelined
requests wait their turn in the buffer). The request body is read only as
the upstream takes it, so a slow upstream slows the client down through
HBONE flow control; the response is written as it arrives.

One codec, :mod:`h1codec` (strict, hand-written), for every request:
HTTP/1.1, HTTP/1.0 (never kept alive; a response without a length is
delimited by closing the connection, as HTTP/1.0 has no chunked coding) and
``Expect``. An upgrade request (WebSocket) is served
(``proxy.upgrade``): after a ``101`` the connection is a byte pipe and no
further request is read from it; an upgrade request with a body is served as
a plain request (the upgrade is not attempted).

``Expect: 100-continue`` is answered by the waypoint when the body is first
needed (never when the request is refused before, e.g. 403), and the field
is not forwarded, as Envoy does. A request whose body was not read to the
end (a local answer, an upstream that answered early) ends the connection
after the response. A malformed request gets ``400`` (``431`` for an
oversized head, ``501`` for an unsupported transfer coding; flag ``DPE``)
and the connection is closed. A response to ``HEAD`` never carries a body.

Timeouts, on Envoy's model (constants below):

- :data:`IDLE_TIMEOUT` (1 h, Envoy's HTTP connection ``idle_timeout``): a
  connection with no request in progress (after a response, or before the
  first request) is ended;
- :data:`REQUEST_HEADERS_TIMEOUT` (60 s; Envoy's ``request_headers_timeout``
  is off by default, nginx's ``client_header_timeout`` is 60 s): once the first
  byte of a request head has arrived, the whole head must arrive within it,
  however slowly it trickles (slowloris); else ``408`` and the connection ends;
- :data:`STREAM_IDLE_TIMEOUT` (5 min, Envoy's ``stream_idle_timeout``): a
  request body that sends nothing for that long is aborted (the upstream
  request is reset, the connection ends).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.waypoint.model import Headers, RequestHead
from ambient.waypoint.proxy.fieldtext import decimal
from ambient.waypoint.proxy.h1codec import (
    LAST_CHUNK,
    Framing,
    ParsedRequest,
    ParseError,
    chunk,
    response_head_bytes,
)
from ambient.waypoint.proxy.h1wire import BodyReader, IncompleteMessage, MessageReader
from ambient.waypoint.proxy.messages import BodyAborted, DownstreamGone, ResponseHead

if TYPE_CHECKING:
    from ambient.waypoint.proxy.server import Tunnel

__all__ = ["serve_http1"]

MAX_HEAD = 64 * 1024
READ_SIZE = 256 * 1024
PROTOCOL = "HTTP/1.1"
IDLE_TIMEOUT = 3600.0
REQUEST_HEADERS_TIMEOUT = 60.0
STREAM_IDLE_TIMEOUT = 300.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Idle(Exception):
    """No request began within :data:`IDLE_TIMEOUT`."""


class _HeadTimeout(Exception):
    """A request head did not complete within :data:`REQUEST_HEADERS_TIMEOUT`."""


class _Body:
    """A request's body; ``Expect: 100-continue`` is answered when it is first read."""

    __slots__ = ("_reader", "_stream", "continue_due", "empty", "length")

    trailers: Headers = ()  # HTTP/1.1 trailers are dropped (Envoy's default)

    def __init__(self, stream: HboneStream, reader: BodyReader, request: ParsedRequest) -> None:
        self._stream = stream
        self._reader = reader
        self.length: int | None = request.length if request.framing is Framing.LENGTH else None
        self.empty = request.framing is Framing.NONE
        self.continue_due = request.expect_continue and not self.empty

    @property
    def complete(self) -> bool:
        return self._reader.complete

    async def read(self) -> bytes:
        if self.continue_due:
            # The client waits for it before sending its body (unless it sent some already).
            self.continue_due = False
            if not self._reader.buffered:
                try:
                    self._stream.write(CONTINUE)
                except HboneError as exc:
                    raise BodyAborted(f"client: {exc}") from None
        try:
            async with asyncio.timeout(STREAM_IDLE_TIMEOUT):
                return await self._reader.read()
        except (ParseError, IncompleteMessage, HboneError) as exc:
            raise BodyAborted(f"client request body: {exc}") from None
        except TimeoutError:
            raise BodyAborted(_body_idle()) from None

    def ready(self) -> bytes | None:
        return self._reader.ready()


class _Sink:
    """Writes one response: Content-Length as given, else chunked (HTTP/1.0: until close)."""

    __slots__ = ("_body", "_chunked", "_head_only", "_http10", "_reader", "_remaining",
                 "_stream", "aborted", "closing", "complete", "started")  # fmt: skip

    def __init__(
        self, stream: HboneStream, request: ParsedRequest, body: _Body, reader: MessageReader
    ) -> None:
        self._stream = stream
        self._reader = reader  # the connection's: it keeps the last head written
        self._body = body
        self._head_only = request.method == "HEAD"
        self._http10 = request.version == "1.0"
        self._chunked = False
        self._remaining: int | None = None  # declared Content-Length still due
        self.closing = not request.keep_alive
        self.started = False
        self.complete = False
        self.aborted = False

    def _head(self, head: ResponseHead, end: bool, close: bool) -> bytes:
        """The response head's bytes; sets how the body that follows is framed."""
        headers = list(head.headers)
        self._body.continue_due = False  # a final answer: the client must not send its body
        if close and not self._body.complete:  # a local answer to a request with an unread body
            self.closing = True
        if self.closing:
            headers.append(("connection", "close"))
        if not end and not self._head_only:
            value = next((v for k, v in headers if k == "content-length"), None)
            length = decimal(value) if value is not None else None
            if length is not None:
                self._remaining = length
            elif self._http10:  # no chunked coding in HTTP/1.0: the close ends the body
                headers = [(k, v) for k, v in headers if k != "content-length"]
            else:
                headers = [(k, v) for k, v in headers if k != "content-length"]
                headers.append(("transfer-encoding", "chunked"))
                self._chunked = True
        self.started = True
        return self._reader.response_head_bytes(head.status, tuple(headers))

    def _framed(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire (a chunk, or counted against Content-Length)."""
        if self._chunked:
            return chunk(data)
        if not (self._http10 and self._remaining is None):
            if self._remaining is None or len(data) > self._remaining:
                raise DownstreamGone("more response bytes than the declared Content-Length")
            self._remaining -= len(data)
        return data

    async def send_head(self, head: ResponseHead, *, end: bool, close: bool = False) -> None:
        try:
            self._stream.write(self._head(head, end, close))
            if end or self._head_only:
                self.complete = True
            await self._stream.drain()
        except (HboneError, ParseError) as exc:
            raise DownstreamGone(str(exc)) from None

    async def send_whole(self, head: ResponseHead, data: bytes, trailers: Headers = ()) -> None:
        """The head, the whole body and its end in one write (one HBONE DATA frame): what
        ``send_head``, ``send_data`` and ``end`` would send, with the same checks."""
        try:
            wire = self._head(head, False, False)
            if data and not self._head_only:
                wire += self._framed(data)
            if self._remaining:
                raise DownstreamGone(f"response ended {self._remaining} bytes short of its length")
            if self._chunked:
                wire += LAST_CHUNK
            self._stream.write(wire)
            self.complete = True
            await self._stream.drain()
        except (HboneError, ParseError) as exc:
            raise DownstreamGone(str(exc)) from None

    async def send_data(self, data: bytes) -> None:
        if self._head_only or not data:
            return
        try:
            self._stream.write(self._framed(data))
            await self._stream.drain()
        except HboneError as exc:
            raise DownstreamGone(str(exc)) from None

    async def end(self, trailers: Headers = ()) -> None:
        if self.complete:
            return
        if self._remaining:
            raise DownstreamGone(f"response ended {self._remaining} bytes short of its length")
        try:
            if self._chunked:
                self._stream.write(LAST_CHUNK)
        except HboneError as exc:
            raise DownstreamGone(str(exc)) from None
        self.complete = True

    def abort(self) -> None:
        self.aborted = True
        self._stream.reset()


class _Pipe:
    """The client's side of an HTTP/1.1 upgrade: ``101``, then the connection's bytes."""

    __slots__ = ("_reader", "_stream", "accepted")

    def __init__(self, stream: HboneStream, reader: MessageReader) -> None:
        self._stream = stream
        self._reader = reader
        self.accepted = False

    async def accept(self, head: ResponseHead) -> int:
        self.accepted = True
        try:
            self._stream.write(response_head_bytes(101, head.headers))
            await self._stream.drain()
        except (HboneError, ParseError) as exc:
            raise DownstreamGone(str(exc)) from None
        return 101

    async def read(self) -> bytes:
        reader = self._reader
        if reader.buffer:  # bytes the client sent right after its request
            data, reader.buffer = reader.buffer, b""
            return data
        try:
            return await self._stream.read(READ_SIZE)
        except HboneError as exc:
            raise BodyAborted(f"client: {exc}") from None

    async def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            await self._stream.drain()
        except HboneError as exc:
            raise DownstreamGone(str(exc)) from None

    def write_eof(self) -> None:
        self._stream.write_eof()

    def abort(self) -> None:
        self._stream.reset()


async def serve_http1(tunnel: Tunnel, initial: bytes) -> None:
    """Serve HTTP/1.x requests on ``tunnel`` until the client or an error ends it."""
    stream = tunnel.stream
    reader = MessageReader(stream, initial)
    idle = _IdleTimer()
    try:
        await _serve_requests(tunnel, reader, idle)
    finally:
        idle.close()  # its timer must not keep this task for an hour


async def _serve_requests(tunnel: Tunnel, reader: MessageReader, idle: _IdleTimer) -> None:
    stream = tunnel.stream
    last_request: ParsedRequest | None = None
    last_head = RequestHead("", "", "")
    while True:
        try:
            end = await _next_head(reader, idle)
            if end is None:
                break  # the client closed between requests
            request = reader.request_head(end)
        except ParseError as exc:
            _refuse(tunnel, exc.status, str(exc))
            return
        except _Idle:
            break  # idle keep-alive connection: end it
        except _HeadTimeout:
            _refuse(tunnel, 408, "request headers timeout", flags="-")
            return
        except (IncompleteMessage, HboneError):
            return
        reader.consume(end)
        assert request.host is not None  # the codec requires exactly one
        upgrade = request.upgrade if request.framing is Framing.NONE else None
        if request is not last_request:  # (a repeated head: the same, immutable RequestHead)
            last_head = RequestHead(
                request.method, request.host, request.target, request.headers, upgrade=upgrade
            )
            last_request = request
        head = last_head
        body = _Body(stream, BodyReader(reader, request.framing, request.length), request)
        sink = _Sink(stream, request, body, reader)
        pipe = _Pipe(stream, reader) if upgrade is not None else None
        record = tunnel.new_record(PROTOCOL)
        await tunnel.forwarder.handle(
            tunnel.target, tunnel.downstream, head, body, sink, record, pipe
        )
        if sink.aborted or stream.closed or (pipe is not None and pipe.accepted):
            return  # (an upgraded connection ends with its pipe)
        if sink.closing or not sink.complete or not body.complete:
            break  # Connection: close, or a request body nobody read: end the connection
    if not stream.closed:
        stream.write_eof()


class _IdleTimer:
    """:data:`IDLE_TIMEOUT` over a keep-alive connection's waits for its next request.

    One timer per connection instead of an ``asyncio.timeout`` per wait (~4 µs each,
    one per request): a wait only moves the deadline, and the timer, when it fires
    before the deadline, sleeps again until it; it cancels the task (as
    ``asyncio.timeout`` does) only while a wait is under way and past its deadline.
    """

    __slots__ = ("_cancelling", "_deadline", "_handle", "_loop", "_task", "expired")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # 0: no wait under way
        self._cancelling = 0
        self.expired = False

    def start(self) -> None:
        """A wait for the next request begins."""
        self._deadline = self._loop.time() + IDLE_TIMEOUT
        if self._task is not None:
            self._cancelling = self._task.cancelling()
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._check)

    def stop(self) -> None:
        self._deadline = 0.0

    def ours(self) -> bool:
        """After a CancelledError in the wait: True if this timer caused it (and nothing
        else cancelled the task), which then is no longer being cancelled."""
        if not self.expired or self._task is None:
            return False
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if not self._deadline:
            return  # a request is under way: the next wait sets the timer again
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._check)
            return
        self.expired = True
        if self._task is not None:
            self._task.cancel()


async def _next_head(reader: MessageReader, idle: _IdleTimer) -> int | None:
    """:meth:`MessageReader.head_end` with the idle and request-head timeouts."""
    if not reader.buffer:
        idle.start()
        try:
            data = await reader.stream.read(READ_SIZE)  # (``reader.fill``, one layer less)
        except asyncio.CancelledError:
            if idle.ours():
                raise _Idle() from None
            raise
        finally:
            idle.stop()
        if not data:
            return None
        reader.buffer = data
    end = reader.buffered_head_end()  # the usual case: the whole head came in one read
    if end is not None:
        return end
    try:
        async with asyncio.timeout(REQUEST_HEADERS_TIMEOUT):
            return await reader.head_end()
    except TimeoutError:
        raise _HeadTimeout() from None


def _body_idle() -> str:
    return f"client request body: nothing received for {STREAM_IDLE_TIMEOUT:g} s"


def _refuse(tunnel: Tunnel, status: int, reason: str, *, flags: str = "DPE") -> None:
    """Answer a request the codec refused (400, 431, 501; 408 when its head was too slow)
    and end the connection."""
    record = tunnel.new_record(PROTOCOL)
    record.status, record.flags, record.details = status, flags, reason
    body = HTTPStatus(status).phrase.encode()
    headers = (
        ("content-length", str(len(body))),
        ("content-type", "text/plain"),
        ("connection", "close"),
    )
    try:
        tunnel.stream.write(response_head_bytes(status, headers) + body)
        record.response_bytes = len(body)
    except HboneError:
        pass
    record.finish()
    if not tunnel.stream.closed:
        tunnel.stream.write_eof()
