"""HTTP/2 (h2c, prior knowledge) to endpoints over HBONE: pooled connections, multiplexed streams.

The protocol itself is ``h2client`` (a lean sans-io client codec); this module
drives it over HBONE streams and pools the connections.

Each upstream HTTP/2 connection is one HBONE CONNECT stream to the endpoint's
ztunnel (opened as for HTTP/1.1, see ``upstream``), carrying h2c with prior
knowledge; many requests share it as streams. Decisions, following Envoy's
upstream HTTP/2 codec as Istio configures it:

- Pool per (endpoint address, port). A request takes the first connection
  with room: fewer live streams than the server's SETTINGS_MAX_CONCURRENT_STREAMS
  (and ``MAX_STREAMS``), not draining; else a new connection is opened.
  ``maxRequestsPerConnection`` drains a connection after that many streams
  (it closes when its last stream ends); a connection without streams for
  ``idle_timeout`` (``http.idleTimeout``, default 5 minutes) is closed.
- Flow control end to end: our windows (``STREAM_WINDOW`` per stream,
  ``CONNECTION_WINDOW`` per connection) are reopened only as the downstream
  consumes the response body, and the request body is read from the
  downstream only as the upstream's windows allow, so a stream holds at most
  a window each way.
- Trailers both ways: the request's trailers go as trailing HEADERS, the
  response's are the body's ``trailers`` (gRPC's ``grpc-status``).
- Cancellation: a response nobody will read (``discard``), a request whose
  task is cancelled (the downstream reset its stream, a timeout) or whose
  body the client aborted, resets its upstream stream with CANCEL.
- Failures before the response head: RST_STREAM REFUSED_STREAM, or a stream
  above a GOAWAY's last stream id, is ``UR`` and marked refused (safe to
  retry, Envoy's ``refused-stream``); any other reset is ``UR``; a lost
  connection is ``UC``. After the head they abort the body (``BodyAborted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    Event,
    GoAway,
    HeadersReceived,
    StreamReset,
    WindowOpened,
)
from ambient.http2.guard import DEFAULT_LIMITS, FloodGuard
from ambient.taskdump import register
from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.balancer import Endpoint
from ambient.waypoint.proxy.h2client import (
    CANCEL,
    MAX_HEADER_LIST,
    NO_ERROR,
    REFUSED_STREAM,
    H2Client,
)
from ambient.waypoint.proxy.messages import (
    Body,
    BodyAborted,
    ConnectionSettings,
    ResponseHead,
    UpstreamFailed,
    UpstreamRequest,
    strip_hop_by_hop,
)

__all__ = ["CONNECTION_WINDOW", "STREAM_WINDOW", "Http2Client"]

STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_STREAMS = 1000  # per connection, whatever the server allows
READ_SIZE = 256 * 1024
_BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: "

Opener = Callable[[Endpoint, ConnectionSettings], Awaitable[HboneStream]]


class _Gone(Exception):
    """The exchange's stream or connection is gone: stop sending."""


class _Exchange:
    """One request and its response on a connection; the response body's ``Body``."""

    __slots__ = ("chunks", "conn", "done", "empty", "ended", "error", "head", "length", "sender",
                 "sending", "stream_id", "trailers", "waiter", "window")  # fmt: skip

    def __init__(self, conn: _Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.head: asyncio.Future[ResponseHead] = asyncio.get_running_loop().create_future()
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.ended = False
        self.error: str | None = None
        self.trailers: Headers = ()
        self.length: int | None = None
        self.empty = False
        self.sender: asyncio.Task[None] | None = None
        self.sending = False  # the request body is still going out
        self.waiter: asyncio.Future[None] | None = None  # a reader waiting for DATA
        self.window: asyncio.Future[None] | None = None  # the sender waiting for WINDOW_UPDATE
        self.done = False

    # -- Body (the response body) -------------------------------------------------------

    async def read(self) -> bytes:
        while not self.chunks:
            if self.error is not None:
                raise BodyAborted(f"upstream response body: {self.error}")
            if self.ended:
                self.conn.finished(self)
                return b""
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        data, flow = self.chunks.popleft()
        self.conn.acknowledge(self.stream_id, flow)
        return data

    def ready(self) -> bytes | None:
        if not self.ended or self.error is not None:
            return None
        data, flow = _whole(self.chunks)
        self.conn.acknowledge(self.stream_id, flow)
        self.conn.finished(self)
        return data

    # -- events ----------------------------------------------------------------------------

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def wake_sender(self) -> None:
        if self.window is not None and not self.window.done():
            self.window.set_result(None)

    def fail(self, flag: str, reason: str, *, refused: bool = False) -> None:
        """The stream was reset or its connection lost: a response not yet complete aborts."""
        if self.error is None and not self.ended:
            self.error = reason
        if not self.head.done():
            self.head.set_exception(UpstreamFailed(flag, _BEFORE_HEADERS + reason, refused=refused))
        self.wake()
        self.wake_sender()
        sender = self.sender
        if sender is not None and not sender.done() and sender is not asyncio.current_task():
            sender.cancel()


class _Connection:
    """One h2c client connection inside an HBONE stream (the codec: ``h2client``)."""

    def __init__(self, client: Http2Client, key: str, stream: HboneStream,
                 settings: ConnectionSettings) -> None:  # fmt: skip
        self.client = client
        self.key = key
        self.stream = stream
        self.settings = settings
        # A malicious upstream gets the budgets our servers give clients (``http2.guard``).
        self.guard = FloodGuard(DEFAULT_LIMITS, MAX_HEADER_LIST)
        self.h2 = H2Client(STREAM_WINDOW, CONNECTION_WINDOW, guard=self.guard)
        self.exchanges: dict[int, _Exchange] = {}
        self.requests = 0
        self.draining = False
        self.dead = False
        self.idle_since = time.monotonic()
        self.reader: asyncio.Task[None] | None = None
        _LIVE.add(self)

    def describe(self) -> dict[str, object]:
        """The connection's HTTP/2 state for ``/debug/tasks`` (see ``http2._Connection``)."""
        exchanges = {
            i: {"window_waiting": e.window is not None, "body_waiting": e.waiter is not None,
                "body_chunks": len(e.chunks), "sending": e.sending, "ended": e.ended}
            for i, e in self.exchanges.items()
        }  # fmt: skip
        return {"endpoint": self.key, "hbone_stream": self.stream.stream_id,
                "dead": self.dead, "draining": self.draining, **self.h2.describe(),
                "requests": exchanges}  # fmt: skip

    def start(self) -> None:
        self.h2.initiate()
        self.flush()
        self.reader = asyncio.ensure_future(self._read())

    @property
    def has_room(self) -> bool:
        if self.dead or self.draining or self.h2.streams_left < 1:
            return False
        limit = self.settings.max_requests
        if limit and self.requests >= limit:
            return False
        return len(self.exchanges) < min(self.h2.max_concurrent_streams, MAX_STREAMS)

    # -- sending ---------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.dead:
            try:
                self.stream.write(data)
            except HboneError as exc:
                self._die(f"connection termination ({exc})")

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and not self.dead:
            self.h2.acknowledge(stream_id, size)
            self.flush()

    def begin(self, request: UpstreamRequest, body: Body) -> _Exchange:
        """Send the request head (and a body already in memory); returns the exchange."""
        stream_id = self.h2.open_stream()
        exchange = _Exchange(self, stream_id)
        self.exchanges[stream_id] = exchange
        self.requests += 1
        limit = self.settings.max_requests
        if (limit and self.requests >= limit) or self.h2.streams_left < 1:
            self.draining = True
        headers = [
            (":method", request.method),
            (":scheme", "http"),
            (":authority", request.authority),
            (":path", request.target),
        ]
        headers.extend(kv for kv in request.headers if kv[0] != "content-length")
        whole = body.ready()
        if whole is not None:
            if whole or body.length is not None:
                headers.append(("content-length", str(len(whole))))
        elif body.length is not None:
            headers.append(("content-length", str(body.length)))
        trailers = body.trailers if whole is not None else ()
        empty = whole is not None and not whole and not trailers
        self.h2.send_headers(stream_id, headers, end=empty)
        if whole and not trailers and len(whole) <= self.h2.window(stream_id):
            self.h2.send_data(stream_id, whole, end=True)
            whole = b""
            empty = True
        self.flush()
        if not empty:
            exchange.sending = True
            exchange.sender = asyncio.ensure_future(self._send_body(exchange, body, whole))
        return exchange

    async def _send_data(self, exchange: _Exchange, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if exchange.error is not None or self.dead or exchange.done:
                raise _Gone()
            window = self.h2.window(exchange.stream_id)
            if window <= 0:
                exchange.window = asyncio.get_running_loop().create_future()
                try:
                    await exchange.window
                finally:
                    exchange.window = None
                continue
            piece, view = view[:window], view[window:]
            self.h2.send_data(exchange.stream_id, bytes(piece))
            self.flush()
            try:
                await self.stream.drain()
            except HboneError as exc:
                self._die(f"connection termination ({exc})")
                raise _Gone() from None

    async def _send_body(self, exchange: _Exchange, body: Body, first: bytes | None) -> None:
        """The request body (its trailers, or END_STREAM), as the upstream's windows allow."""
        try:
            if first is None:
                while data := await body.read():
                    await self._send_data(exchange, data)
            elif first:
                await self._send_data(exchange, first)
            if exchange.error is not None or self.dead or exchange.done:
                raise _Gone()
            trailers = body.trailers
            if trailers:
                self.h2.send_headers(exchange.stream_id, list(trailers), end=True)
            else:
                self.h2.end_stream(exchange.stream_id)
            self.flush()
        except BodyAborted:
            # The client went away mid-body: the upstream must not see a complete request.
            self.reset(exchange)
        except _Gone:
            pass  # the upstream reset or answered early and closed: nothing more to send
        finally:
            exchange.sending = False
            self.finished(exchange)

    # -- lifecycle of exchanges -------------------------------------------------------------

    def reset(self, exchange: _Exchange) -> None:
        """Cancel ``exchange`` (RST_STREAM CANCEL) and forget it."""
        if exchange.done:
            return
        if not self.dead:
            self.h2.reset(exchange.stream_id, CANCEL)
        exchange.fail("UR", "local reset")
        self._forget(exchange)

    def finished(self, exchange: _Exchange) -> None:
        """Forget ``exchange`` once its response and its request are both over."""
        if exchange.done or exchange.sending:
            return  # (the sender calls again when it is done)
        if exchange.ended or exchange.error is not None:
            self._forget(exchange)

    def _forget(self, exchange: _Exchange) -> None:
        exchange.done = True
        self.exchanges.pop(exchange.stream_id, None)
        leftover = _whole(exchange.chunks)[1] if exchange.chunks else 0
        if leftover:
            self.acknowledge(exchange.stream_id, leftover)
        self.h2.forget(exchange.stream_id)
        sender = exchange.sender
        if sender is not None and not sender.done() and sender is not asyncio.current_task():
            sender.cancel()
        if not self.exchanges:
            self.idle_since = time.monotonic()
            if self.draining:
                self.close()
        self.flush()

    def close(self) -> None:
        """GOAWAY, then the tunnel's end (half-close)."""
        if self.dead:
            return
        self.h2.close()
        self.flush()
        self.dead = True
        with contextlib.suppress(HboneError):
            self.stream.write_eof()
        self.client.forget(self)
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()

    def _die(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        for exchange in list(self.exchanges.values()):
            exchange.fail("UC", reason)
            exchange.done = True
        self.exchanges.clear()
        self.client.forget(self)
        with contextlib.suppress(HboneError):
            self.stream.reset()

    # -- receiving ---------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while not self.dead:
                data = await self.stream.read(READ_SIZE)
                if not data:
                    self._die("connection termination (the upstream closed the connection)")
                    return
                for event in self.h2.receive_data(data):
                    self._on_event(event)
                self.flush()
        except HboneError as exc:
            self._die(f"connection termination ({exc})")

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is None:
                self.acknowledge(event.stream_id, event.flow)
                return
            exchange.chunks.append((event.data, event.flow))
            if event.end_stream:
                exchange.ended = True
            exchange.wake()
        elif isinstance(event, HeadersReceived):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is None:
                return
            if event.trailers:
                exchange.trailers = event.headers
                exchange.ended = True
                exchange.wake()
            elif not exchange.head.done():
                head, length = _response_head(event.status, event.headers)
                exchange.length = length
                exchange.empty = event.end_stream
                exchange.ended = event.end_stream
                exchange.head.set_result(head)
                if event.end_stream:
                    self.finished(exchange)
        elif isinstance(event, WindowOpened):  # (the events most frequent first)
            if event.stream_id == 0:
                for waiting in list(self.exchanges.values()):
                    waiting.wake_sender()
            elif (exchange := self.exchanges.get(event.stream_id)) is not None:
                exchange.wake_sender()
        elif isinstance(event, StreamReset):
            exchange = self.exchanges.get(event.stream_id)
            if exchange is None:
                return
            refused = event.error_code == REFUSED_STREAM and not event.local
            if event.local:
                reason = "protocol error (a malformed response)"
            else:
                reason = "remote refused stream reset" if refused else "remote reset"
            exchange.fail("UR", reason, refused=refused)
            if not exchange.ended:
                self._forget(exchange)
            elif not exchange.chunks:  # RST after a complete response: it stays readable
                exchange.sending = False
                self.finished(exchange)
        elif isinstance(event, GoAway):
            self._on_goaway(event)
        elif isinstance(event, ConnectionLost):
            self.flush()
            self._die(f"protocol error ({event.reason})")

    def _on_goaway(self, event: GoAway) -> None:
        self.draining = True
        for stream_id, exchange in list(self.exchanges.items()):
            if stream_id > event.last_stream_id:  # never processed: safe to retry elsewhere
                exchange.fail("UR", "remote refused stream reset (GOAWAY)", refused=True)
                self._forget(exchange)
        if event.error_code != NO_ERROR:
            self._die(f"connection termination (GOAWAY error {event.error_code})")
        elif not self.exchanges:
            self.close()


def _response_head(status: int, fields: Headers) -> tuple[ResponseHead, int | None]:
    length: int | None = None
    for name, value in fields:
        if name == "content-length" and value.isdigit() and value.isascii():
            length = int(value)
    return ResponseHead(status, strip_hop_by_hop(fields)), length


def _whole(chunks: deque[tuple[bytes, int]]) -> tuple[bytes, int]:
    """Every chunk's bytes joined and their flow-controlled size summed; ``chunks`` emptied."""
    if len(chunks) == 1:  # the usual small body: one DATA frame
        return chunks.pop()
    data = b"".join(chunk for chunk, _ in chunks)
    flow = sum(size for _, size in chunks)
    chunks.clear()
    return data, flow


_LIVE: weakref.WeakSet[_Connection] = weakref.WeakSet()
register("waypoint HTTP/2 connections (upstream)", lambda: [c.describe() for c in list(_LIVE)])


class Http2Client:
    """HTTP/2 requests to endpoints, multiplexed over pooled h2c connections."""

    def __init__(self, open_stream: Opener, *, idle_timeout: float = 300.0) -> None:
        self._open = open_stream
        self.idle_timeout = idle_timeout
        self._pools: dict[str, list[_Connection]] = {}  # by Endpoint.address
        self._dialing: dict[str, asyncio.Lock] = {}

    def connections(self) -> list[_Connection]:
        return [c for pool in self._pools.values() for c in pool]

    async def send(
        self, endpoint: Endpoint, request: UpstreamRequest, body: Body, settings: ConnectionSettings
    ) -> tuple[ResponseHead, Body]:
        """Send ``request``; the response head and a streaming body (raises UpstreamFailed)."""
        conn = self._find(endpoint.address, settings)  # the usual case: no coroutine to dial
        if conn is None:
            conn = await self._connection(endpoint, settings)
        exchange = conn.begin(request, body)
        try:
            head = await exchange.head
        except UpstreamFailed:
            conn.finished(exchange)
            raise
        except BaseException:  # cancelled (the client reset, a timeout): cancel upstream too
            conn.reset(exchange)
            raise
        if exchange.empty:
            conn.finished(exchange)
        return head, exchange

    @staticmethod
    def discard(body: Body) -> bool:
        """Reset a response nobody will read; False if ``body`` is not one of ours."""
        if not isinstance(body, _Exchange):
            return False
        if not (body.ended and not body.chunks):
            body.conn.reset(body)
        else:
            body.conn.finished(body)
        return True

    def forget(self, conn: _Connection) -> None:
        pool = self._pools.get(conn.key)
        if pool and conn in pool:
            pool.remove(conn)
            if not pool:
                del self._pools[conn.key]
                lock = self._dialing.get(conn.key)
                if lock is not None and not lock.locked():
                    del self._dialing[conn.key]  # endpoints come and go: keep nothing for them

    def expire_idle(self) -> int:
        """Close connections without streams for longer than their idle timeout."""
        now = time.monotonic()
        closed = 0
        for conn in self.connections():
            limit = conn.settings.idle_timeout or self.idle_timeout
            if not conn.exchanges and now - conn.idle_since >= limit:
                conn.close()
                closed += 1
        return closed

    def close(self) -> None:
        for conn in self.connections():
            conn.close()

    async def _connection(self, endpoint: Endpoint, settings: ConnectionSettings) -> _Connection:
        key = endpoint.address
        found = self._find(key, settings)
        if found is not None:
            return found
        lock = self._dialing.setdefault(key, asyncio.Lock())
        async with lock:  # one dial at a time per endpoint: a burst shares the new connection
            found = self._find(key, settings)
            if found is not None:
                return found
            stream = await self._open(endpoint, settings)
            conn = _Connection(self, key, stream, settings)
            conn.start()
            self._pools.setdefault(key, []).append(conn)
            return conn

    def _find(self, key: str, settings: ConnectionSettings) -> _Connection | None:
        for conn in self._pools.get(key, ()):
            if (conn.settings is settings or conn.settings == settings) and conn.has_room:
                return conn
        return None
