"""HTTP/1.x clients inside a tunnel: h11, keep-alive, streaming bodies both ways, 100-continue.

One request at a time per tunnel (HTTP/1.1 has no multiplexing; pipelined
requests wait their turn in h11's buffer). The request body is read only as
the upstream takes it, so a slow upstream slows the client down through
HBONE flow control; the response is written as it arrives.

``Expect: 100-continue`` is answered by the waypoint when the body is first
needed (never when the request is refused before, e.g. 403), and the field
is not forwarded, as Envoy does. A request whose body was not read to the
end (a local answer, an upstream that answered early) ends the connection
after the response. A malformed request gets ``400`` (flag ``DPE``) and the
connection is closed.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.waypoint.model import RequestHead
from ambient.waypoint.proxy.messages import BodyAborted, DownstreamGone, ResponseHead

if TYPE_CHECKING:
    from ambient.waypoint.proxy.server import Tunnel

__all__ = ["serve_http1"]

MAX_HEAD = 64 * 1024
READ_SIZE = 256 * 1024
PROTOCOL = "HTTP/1.1"


class _Downstream:
    """The h11 server connection over the tunnel's stream."""

    def __init__(self, stream: HboneStream, initial: bytes) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.conn.receive_data(initial)

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.read(READ_SIZE)
            self.conn.receive_data(data)

    def write(self, data: bytes) -> None:
        self.stream.write(data)


class _RequestBody:
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

    async def end(self) -> None:
        try:
            self._down.write(self._down.conn.send(h11.EndOfMessage()))
        except (HboneError, h11.ProtocolError) as exc:
            raise DownstreamGone(str(exc)) from None

    def abort(self) -> None:
        self.aborted = True
        self._down.stream.reset()


async def serve_http1(tunnel: Tunnel, initial: bytes) -> None:
    """Serve HTTP/1.x requests on ``tunnel`` until the client or an error ends it."""
    down = _Downstream(tunnel.stream, initial)
    conn = down.conn
    while True:
        try:
            event = await down.next_event()
        except h11.RemoteProtocolError as exc:
            await _bad_request(tunnel, down, str(exc))
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
