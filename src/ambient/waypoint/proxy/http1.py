"""HTTP/1.x clients inside a tunnel: keep-alive, streaming bodies both ways, 100-continue.

One request at a time per tunnel (HTTP/1.1 has no multiplexing; pipelined
requests wait their turn in the buffer). The request body is read only as
the upstream takes it, so a slow upstream slows the client down through
HBONE flow control; the response is written as it arrives.

Two codecs: the common case (HTTP/1.1, no ``Expect``) runs on
:mod:`h1codec`, a strict hand-written parser and writer; a connection whose
request is HTTP/1.0 or carries ``Expect`` is handed, from that request on, to
h11 (the buffered bytes go with it). An upgrade request (WebSocket) is served
on ``h1codec`` (``proxy.upgrade``): after a ``101`` the connection is a byte
pipe and no further request is read from it; an upgrade request with a body
is served as a plain request (the upgrade is not attempted). Both refuse the
same malformed input; ``h1codec`` also refuses ``Content-Length`` together
with ``Transfer-Encoding`` (request smuggling), which h11 would accept.

``Expect: 100-continue`` is answered by the waypoint when the body is first
needed (never when the request is refused before, e.g. 403), and the field
is not forwarded, as Envoy does. A request whose body was not read to the
end (a local answer, an upstream that answered early) ends the connection
after the response. A malformed request gets ``400`` (``431`` for an
oversized head, ``501`` for an unsupported transfer coding; flag ``DPE``)
and the connection is closed. A response to ``HEAD`` never carries a body.

Timeouts, on Envoy's model (constants below, both codecs):

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

import h11

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
    parse_request_head,
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


class _Idle(Exception):
    """No request began within :data:`IDLE_TIMEOUT`."""


class _HeadTimeout(Exception):
    """A request head did not complete within :data:`REQUEST_HEADERS_TIMEOUT`."""


class _Downstream:
    """The h11 server connection over the tunnel's stream."""

    def __init__(self, stream: HboneStream, initial: bytes) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.conn.receive_data(initial)

    async def next_event(self) -> object:
        """The next h11 event of a request body (no byte for :data:`STREAM_IDLE_TIMEOUT`:
        ``TimeoutError``)."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(STREAM_IDLE_TIMEOUT):
                data = await self.stream.read(READ_SIZE)
            self.conn.receive_data(data)

    async def next_request(self) -> object:
        """The next event between requests: :class:`_Idle` while nothing of a request has
        come, :class:`_HeadTimeout` once its head started and did not finish in time."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if deadline is None and self.conn.trailing_data[0]:
                deadline = loop.time() + REQUEST_HEADERS_TIMEOUT
            wait = IDLE_TIMEOUT if deadline is None else deadline - loop.time()
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await self.stream.read(READ_SIZE)
            except TimeoutError:
                raise (_Idle() if deadline is None else _HeadTimeout()) from None
            self.conn.receive_data(data)

    def write(self, data: bytes) -> None:
        self.stream.write(data)


class _RequestBody:
    trailers: Headers = ()  # HTTP/1.1 trailers are dropped (Envoy's default)

    def __init__(self, downstream: _Downstream, length: int | None, empty: bool) -> None:
        self._down = downstream
        self.length = length
        self.empty = empty
        self.complete = empty

    async def read(self) -> bytes:
        if self.complete:
            return b""
        conn = self._down.conn
        if conn.they_are_waiting_for_100_continue:
            self._down.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            while True:
                event = await self._down.next_event()
                if isinstance(event, h11.Data):
                    if event.data:
                        return bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.complete = True
                    return b""
                else:
                    raise BodyAborted(f"client closed mid-body ({type(event).__name__})")
        except (h11.ProtocolError, HboneError) as exc:
            raise BodyAborted(f"client request body: {exc}") from None
        except TimeoutError:
            raise BodyAborted(_body_idle()) from None

    def ready(self) -> bytes | None:
        return b"" if self.complete else None


class _Sink:
    def __init__(self, downstream: _Downstream, request_body: _RequestBody) -> None:
        self._down = downstream
        self._body = request_body
        self.started = False
        self.aborted = False

    async def send_head(self, head: ResponseHead, *, end: bool, close: bool = False) -> None:
        conn = self._down.conn
        headers = list(head.headers)
        if close and not self._body.complete:  # a local answer to a request with an unread body
            headers.append(("connection", "close"))
        self.started = True
        try:
            response = h11.Response(
                status_code=head.status, headers=headers, reason=_reason(head.status)
            )
            self._down.write(conn.send(response))
            if end:
                self._down.write(conn.send(h11.EndOfMessage()))
            await self._down.stream.drain()
        except (HboneError, h11.ProtocolError) as exc:
            raise DownstreamGone(str(exc)) from None

    async def send_data(self, data: bytes) -> None:
        conn = self._down.conn
        try:
            for piece in conn.send_with_data_passthrough(h11.Data(data=data)) or ():
                self._down.write(piece)
            await self._down.stream.drain()
        except (HboneError, h11.ProtocolError) as exc:
            raise DownstreamGone(str(exc)) from None

    async def end(self, trailers: Headers = ()) -> None:
        try:
            self._down.write(self._down.conn.send(h11.EndOfMessage()))
        except (HboneError, h11.ProtocolError) as exc:
            raise DownstreamGone(str(exc)) from None

    def abort(self) -> None:
        self.aborted = True
        self._down.stream.reset()


# -- the fast path (h1codec) ------------------------------------------------------------


class _FastBody:
    """The request body on the fast path."""

    __slots__ = ("_reader", "empty", "length")

    trailers: Headers = ()  # HTTP/1.1 trailers are dropped (Envoy's default)

    def __init__(self, reader: BodyReader, request: ParsedRequest) -> None:
        self._reader = reader
        self.length: int | None = request.length if request.framing is Framing.LENGTH else None
        self.empty = request.framing is Framing.NONE

    @property
    def complete(self) -> bool:
        return self._reader.complete

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(STREAM_IDLE_TIMEOUT):
                return await self._reader.read()
        except (ParseError, IncompleteMessage, HboneError) as exc:
            raise BodyAborted(f"client request body: {exc}") from None
        except TimeoutError:
            raise BodyAborted(_body_idle()) from None

    def ready(self) -> bytes | None:
        return self._reader.ready()


class _FastSink:
    """Writes one response with ``h1codec``: Content-Length as given, else chunked."""

    __slots__ = ("_body", "_chunked", "_head_only", "_remaining", "_stream", "aborted",
                 "closing", "complete", "started")  # fmt: skip

    def __init__(self, stream: HboneStream, request: ParsedRequest, body: _FastBody) -> None:
        self._stream = stream
        self._body = body
        self._head_only = request.method == "HEAD"
        self._chunked = False
        self._remaining: int | None = None  # declared Content-Length still due
        self.closing = not request.keep_alive
        self.started = False
        self.complete = False
        self.aborted = False

    async def send_head(self, head: ResponseHead, *, end: bool, close: bool = False) -> None:
        headers = list(head.headers)
        if close and not self._body.complete:  # a local answer to a request with an unread body
            self.closing = True
        if self.closing:
            headers.append(("connection", "close"))
        if not end and not self._head_only:
            value = next((v for k, v in headers if k == "content-length"), None)
            length = decimal(value) if value is not None else None
            if length is not None:
                self._remaining = length
            else:
                headers = [(k, v) for k, v in headers if k != "content-length"]
                headers.append(("transfer-encoding", "chunked"))
                self._chunked = True
        self.started = True
        try:
            self._stream.write(response_head_bytes(head.status, tuple(headers)))
            if end or self._head_only:
                self.complete = True
            await self._stream.drain()
        except (HboneError, ParseError) as exc:
            raise DownstreamGone(str(exc)) from None

    async def send_data(self, data: bytes) -> None:
        if self._head_only or not data:
            return
        try:
            if self._chunked:
                self._stream.write(chunk(data))
            else:
                if self._remaining is None or len(data) > self._remaining:
                    raise DownstreamGone("more response bytes than the declared Content-Length")
                self._remaining -= len(data)
                self._stream.write(data)
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
    while True:
        try:
            end = await _next_head(reader)
            if end is None:
                break  # the client closed between requests
            request = parse_request_head(reader.buffer, end)
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
        if request.unusual:
            await _serve_h11(tunnel, reader.buffer)
            return
        reader.consume(end)
        assert request.host is not None  # HTTP/1.1 requires exactly one
        upgrade = request.upgrade if request.framing is Framing.NONE else None
        head = RequestHead(
            request.method, request.host, request.target, request.headers, upgrade=upgrade
        )
        body = _FastBody(BodyReader(reader, request.framing, request.length), request)
        sink = _FastSink(stream, request, body)
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


async def _next_head(reader: MessageReader) -> int | None:
    """:meth:`MessageReader.head_end` with the idle and request-head timeouts."""
    if not reader.buffer:
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                if not await reader.fill():
                    return None
        except TimeoutError:
            raise _Idle() from None
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


# -- the h11 path: HTTP/1.0, Expect, Upgrade ----------------------------------------------


async def _serve_h11(tunnel: Tunnel, initial: bytes) -> None:
    """Serve the rest of the connection with h11, starting with the bytes in ``initial``."""
    down = _Downstream(tunnel.stream, initial)
    conn = down.conn
    while True:
        try:
            event = await down.next_request()
        except h11.RemoteProtocolError as exc:
            await _bad_request(tunnel, down, str(exc))
            return
        except _Idle:
            break
        except _HeadTimeout:
            _refuse(tunnel, 408, "request headers timeout", flags="-")
            return
        except HboneError:
            return
        if not isinstance(event, h11.Request):
            break  # ConnectionClosed (or PAUSED: nothing more to serve)
        head = _request_head(event)
        if head is None:
            await _bad_request(tunnel, down, "missing Host header")
            return
        length, empty = _framing(event)
        if empty:  # h11 has the (empty) body's EndOfMessage ready; take it now
            end = conn.next_event()
            assert isinstance(end, h11.EndOfMessage), end
        body = _RequestBody(down, length, empty)
        sink = _Sink(down, body)
        record = tunnel.new_record(PROTOCOL)
        await tunnel.forwarder.handle(tunnel.target, tunnel.downstream, head, body, sink, record)
        if sink.aborted or tunnel.stream.closed:
            return
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            continue
        break  # MUST_CLOSE, or a request body nobody read: end the connection
    if not tunnel.stream.closed:
        tunnel.stream.write_eof()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _request_head(event: h11.Request) -> RequestHead | None:
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers)
    host = next((v for k, v in headers if k == "host"), None)
    if host is None:
        return None
    return RequestHead(
        method=event.method.decode("ascii"),
        authority=host,
        path=event.target.decode("latin-1"),
        headers=headers,
    )


def _framing(event: h11.Request) -> tuple[int | None, bool]:
    length: int | None = None
    chunked = False
    for name, value in event.headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    if chunked:
        return None, False
    return length, length is None or length == 0


async def _bad_request(tunnel: Tunnel, down: _Downstream, reason: str) -> None:
    record = tunnel.new_record(PROTOCOL)
    record.status, record.flags, record.details = 400, "DPE", reason
    conn = down.conn
    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        body = b"Bad Request"
        try:
            down.write(
                conn.send(
                    h11.Response(
                        status_code=400,
                        headers=[
                            ("content-length", str(len(body))),
                            ("content-type", "text/plain"),
                            ("connection", "close"),
                        ],
                    )
                )
            )
            down.write(conn.send(h11.Data(data=body)))
            down.write(conn.send(h11.EndOfMessage()))
            record.response_bytes = len(body)
        except (h11.ProtocolError, HboneError):
            pass
    record.finish()
    if not tunnel.stream.closed:
        tunnel.stream.write_eof()
