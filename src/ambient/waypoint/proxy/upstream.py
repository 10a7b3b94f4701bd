"""Requests to endpoints over HBONE: HTTP/1.1 with keep-alive reuse here, HTTP/2 in ``upstream_h2``.

``UpstreamClient.send`` speaks the request's ``version`` (``proxy.protocols``
chose it from the backend port's protocol and the downstream's).

Each upstream HTTP/1.1 connection is one HBONE CONNECT stream from the
waypoint (its own certificate) to ``<endpoint ip>:15008``, the endpoint's
ztunnel, with ``:authority`` ``<endpoint ip>:<target port>``; the server
must present the endpoint workload's identity. Streams share HBONE
connections through ``hbone.pool`` (ztunnel's keying). Decisions:

- The CONNECT carries no ``forwarded`` header and originates from the
  waypoint's own address: an upstream connection is reused by requests of
  many clients, so the destination sees the waypoint as its peer (identity
  and address), as with Istio's waypoint. The original client travels in the
  HTTP request (``x-request-id``; the HBONE source identity is checked at
  the waypoint).
- Idle connections are kept per (endpoint, port), most recently used first,
  up to ``max_idle`` each, for ``idle_timeout`` seconds. A request that fails
  on a *reused* connection before any response byte and before any request
  body byte was sent is retried once on a fresh connection (the server may
- A request body already in memory (a small body that arrived with its
  head) goes in the same write as the head: one HBONE DATA frame. Any other
  body is sent by its own task while the response is read, so an upstream
  that answers while still receiving (echo, early 413) works and nothing
  deadlocks; back-pressure holds both ways.
- Messages are written and parsed with ``h1codec`` (strict: a malformed
  response head, conflicting framing or a bad chunk is an upstream protocol
  error, ``UC``). A response without Content-Length or chunked framing is
  read until the upstream closes, and that connection is not reused; nor is
  one whose response said ``Connection: close`` or was HTTP/1.0.
- Per-cluster settings from a DestinationRule's ``connectionPool``
  (``ConnectionSettings``): a connection closes after
  ``maxRequestsPerConnection`` requests, idles at most ``http.idleTimeout``,
  and the tunnel must open within ``tcp.connectTimeout`` (else ``UF``).
- A response the caller will not read (a retried 503) is ``discard``-ed: its
  connection is reset rather than drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

from ambient.hbone.errors import HboneError, StreamRefused
from ambient.hbone.messages import HBONE_PORT, ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.balancer import Endpoint
from ambient.waypoint.proxy.h1codec import (
    LAST_CHUNK,
    Framing,
    ParseError,
    chunk,
    request_head_bytes,
)
from ambient.waypoint.proxy.h1wire import READ_SIZE, BodyReader, IncompleteMessage, MessageReader
from ambient.waypoint.proxy.messages import (
    Body,
    BodyAborted,
    ConnectionSettings,
    ResponseHead,
    UpstreamFailed,
    UpstreamRequest,
    strip_hop_by_hop,
)
from ambient.waypoint.proxy.protocols import HTTP2
from ambient.waypoint.proxy.upstream_h2 import Http2Client

__all__ = ["ConnectionSettings", "UpstreamClient", "UpstreamFailed", "UpstreamRequest"]

_FAILURES = (ParseError, IncompleteMessage, HboneError)
_DEFAULT_SETTINGS = ConnectionSettings()


class _Connection:
    """One keep-alive HTTP/1.1 connection over an HBONE stream."""

    __slots__ = ("busy", "idle_since", "keep_alive", "reader", "requests", "settings", "stream")

    def __init__(self, stream: HboneStream, settings: ConnectionSettings) -> None:
        self.stream = stream
        self.settings = settings
        self.reader = MessageReader(stream)
        self.requests = 0
        self.idle_since = 0.0
        self.busy = False  # an exchange is under way
        self.keep_alive = True  # false once a response said it is the last

    @property
    def usable(self) -> bool:
        limit = self.settings.max_requests
        return (
            self.keep_alive
            and not (limit and self.requests >= limit)
            and not self.busy
            and not self.reader.buffer  # bytes nobody asked for: the connection is confused
            and not self.stream.closed
            and not self.stream.at_eof
        )

    def close(self, *, idle: bool = False) -> None:
        """End the connection: FIN when it is idle or the server closed first, else reset."""
        self.keep_alive = False
        if idle or self.stream.at_eof:
            self.stream.write_eof()
        else:
            self.stream.reset()


class _ResponseBody:
    """The upstream response body, read as the downstream consumes it."""

    __slots__ = ("_body", "_exchange", "empty", "length")

    trailers: Headers = ()  # HTTP/1.1 trailers are dropped

    def __init__(self, exchange: _Exchange, body: BodyReader, length: int | None) -> None:
        self._exchange = exchange
        self._body = body
        self.length = length
        self.empty = body.complete

    async def read(self) -> bytes:
        if self._body.complete:
            return b""
        body = self._body
        try:
            data = await body.read()
        except _FAILURES as exc:
            body.complete = True
            self._exchange.fail()
            raise BodyAborted(f"upstream response body: {exc}") from None
        if body.complete:
            self._exchange.response_complete()
        return data

    def ready(self) -> bytes | None:
        if self._body.complete:
            return b""
        data = self._body.ready()
        if data is not None:
            self._exchange.response_complete()
        return data

    def discard(self) -> None:
        """The response will not be read: end the exchange (its connection is reset)."""
        if not self._body.complete:
            self._body.complete = True
            self._exchange.fail()


class _Exchange:
    """One request/response on a connection; returns the connection to the pool when both end."""

    def __init__(self, client: UpstreamClient, endpoint: Endpoint, connection: _Connection) -> None:
        self.client = client
        self.endpoint = endpoint
        self.connection = connection
        self.sender: asyncio.Task[None] | None = None
        self.body_bytes_sent = 0
        self.request_done = False
        self._response_done = False
        self._released = False

    def response_complete(self) -> None:
        self._response_done = True
        if self.sender is None or self.sender.done():
            self._release()
        else:
            self.sender.add_done_callback(lambda _: self._release())

    def fail(self) -> None:
        if self.sender is not None:
            self.sender.cancel()
        if not self._released:
            self._released = True
            self.connection.close()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        connection = self.connection
        connection.busy = False
        if self.request_done and connection.keep_alive:
            self.client.put_idle(self.endpoint, connection)
        else:
            connection.close()

    async def send_body(self, body: Body, chunked: bool) -> None:
        stream = self.connection.stream
        try:
            while data := await body.read():
                self.body_bytes_sent += len(data)
                stream.write(chunk(data) if chunked else data)
                await stream.drain()
            if chunked:
                stream.write(LAST_CHUNK)
            self.request_done = True
        except (BodyAborted, HboneError):
            # The client went away mid-body, or the upstream died: the exchange is over.
            self.connection.stream.reset()
            self.connection.keep_alive = False
            if not self._response_done:
                self._released = True


class UpstreamClient:
    """Sends requests to endpoints over HBONE with HTTP/1.1, reusing idle connections."""

    def __init__(
        self,
        pool: ConnectionPool,
        certificate: WorkloadCertificate | None = None,
        *,
        source_ip: str | None = None,
        max_idle: int = 64,
        idle_timeout: float = 300.0,
    ) -> None:
        self.pool = pool
        self.certificate = certificate  # the waypoint's own; replaced on renewal
        self.source_ip = source_ip
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[str, list[_Connection]] = {}  # by Endpoint.address
        self.http2 = Http2Client(self.open_with, idle_timeout=idle_timeout)

    def send(
        self,
        endpoint: Endpoint,
        request: UpstreamRequest,
        body: Body,
        settings: ConnectionSettings = _DEFAULT_SETTINGS,
    ) -> Coroutine[Any, Any, tuple[ResponseHead, Body]]:
        """Send ``request`` to ``endpoint``; the response head and a streaming body.

        Raises :class:`UpstreamFailed` (``UF``: could not connect; ``UC``: the
        connection ended before a response head; ``UR``: HTTP/2 stream reset).
        (A plain function handing back the version's coroutine: no layer of its own.)
        """
        if request.version == HTTP2:
            return self.http2.send(endpoint, request, body, settings)
        return self._send_http1(endpoint, request, body, settings)

    async def open_with(self, endpoint: Endpoint, settings: ConnectionSettings) -> HboneStream:
        """A new HBONE stream to ``endpoint`` within the cluster's ``connectTimeout``."""
        if not settings.connect_timeout:
            return await self.open_stream(endpoint)
        try:
            async with asyncio.timeout(settings.connect_timeout):
                return await self.open_stream(endpoint)
        except TimeoutError:
            raise UpstreamFailed(
                "UF", f"connect timeout after {settings.connect_timeout:g}s"
            ) from None

    def discard(self, body: Body) -> None:
        """Drop a response body nobody will read (HTTP/1.1: its connection is reset, not
        drained; HTTP/2: its stream is reset)."""
        if isinstance(body, _ResponseBody):
            body.discard()
        else:
            self.http2.discard(body)

    def put_idle(self, endpoint: Endpoint, connection: _Connection) -> None:
        idle = self._idle.setdefault(endpoint.address, [])
        if len(idle) >= self.max_idle or not connection.usable:
            connection.close(idle=True)
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def expire_idle(self) -> int:
        """Close connections idle longer than ``idle_timeout`` (called periodically)."""
        now = time.monotonic()
        closed = self.http2.expire_idle()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if now - c.idle_since < self._idle_limit(c) and c.usable]
            for c in idle:
                if c not in keep:
                    c.close(idle=True)
                    closed += 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return closed

    def close(self) -> None:
        self.http2.close()
        for idle in self._idle.values():
            for connection in idle:
                connection.close(idle=True)
        self._idle.clear()

    # -- internals -----------------------------------------------------------------

    def _take_idle(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint.address)
        while idle:
            connection = idle.pop()
            if connection.usable and time.monotonic() - connection.idle_since < self._idle_limit(
                connection
            ):
                return connection
            connection.close(idle=True)
        return None

    def _idle_limit(self, connection: _Connection) -> float:
        return connection.settings.idle_timeout or self.idle_timeout

    async def open_stream(self, endpoint: Endpoint) -> HboneStream:
        """A new HBONE stream to ``endpoint`` (raises :class:`UpstreamFailed` with ``UF``)."""
        if self.certificate is None:
            raise UpstreamFailed("UF", "the waypoint has no certificate yet")
        try:
            stream = await self.pool.open_stream(
                source=self.certificate,
                destination=SocketAddress(endpoint.ip, HBONE_PORT),
                expected=[endpoint.workload.identity],
                request=ConnectRequest(authority=SocketAddress(endpoint.ip, endpoint.port)),
                source_ip=self.source_ip,
            )
        except StreamRefused as exc:
            raise UpstreamFailed("UF", f"endpoint's ztunnel answered {exc.status}: {exc}") from None
        except HboneError as exc:
            raise UpstreamFailed("UF", str(exc)) from None
        return stream

    async def _send_http1(
        self,
        endpoint: Endpoint,
        request: UpstreamRequest,
        body: Body,
        settings: ConnectionSettings,
    ) -> tuple[ResponseHead, Body]:
        """One HTTP/1.1 exchange: on an idle connection, else (or if that one turns out to
        have been closed by the server before anything was exchanged) on a fresh one."""
        connection = self._take_idle(endpoint)
        if connection is None:
            connection = _Connection(await self.open_with(endpoint, settings), settings)
        try:
            wire, whole, chunked = _request_wire(request, body)
        except ParseError as exc:
            connection.close()
            raise UpstreamFailed("UC", f"upstream connection: {exc}") from None
        while True:
            reused = connection.requests > 0
            connection.requests += 1
            connection.busy = True
            exchange = _Exchange(self, endpoint, connection)
            stream = connection.stream
            try:
                stream.write(wire)
            except HboneError as exc:
                connection.close()
                if reused:  # the idle connection had been closed: once more, fresh
                    connection = _Connection(await self.open_with(endpoint, settings), settings)
                    continue
                raise UpstreamFailed("UC", f"upstream connection: {exc}") from None
            if whole is not None:
                exchange.request_done = True
                exchange.body_bytes_sent = len(whole)
            else:
                exchange.sender = asyncio.ensure_future(exchange.send_body(body, chunked))
            reader = connection.reader
            try:
                while True:
                    end = None
                    if not reader.buffer:  # the usual case: the head comes in one read
                        data = await stream.read(READ_SIZE)
                        if data:
                            reader.buffer = data
                            end = reader.buffered_head_end()
                    if end is None:
                        end = await reader.head_end()
                        if end is None:
                            raise IncompleteMessage("connection closed before a response")
                    response = reader.response_head(end, request.method)
                    reader.consume(end)
                    if response.status >= 200:
                        break
                    if response.status == 101:
                        raise ParseError("unexpected 101 Switching Protocols", 502)
                    # 100 Continue and other interim answers: the waypoint answered its client.
            except _FAILURES as exc:
                exchange.fail()
                if exchange.sender is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await exchange.sender
                if reused and exchange.body_bytes_sent == 0 and not isinstance(exc, ParseError):
                    # the idle connection had been closed by the server: once more, fresh
                    connection = _Connection(await self.open_with(endpoint, settings), settings)
                    continue
                raise UpstreamFailed(
                    "UC",
                    "upstream connect error or disconnect/reset before headers. "
                    f"reset reason: connection termination ({exc})",
                ) from None
            except BaseException:
                exchange.fail()
                raise
            break
        connection.keep_alive = response.keep_alive
        length = response.length if response.framing is Framing.LENGTH else None
        body_reader = BodyReader(reader, response.framing, response.length)
        response_body = _ResponseBody(exchange, body_reader, length)
        if response_body.empty:
            exchange.response_complete()
        return ResponseHead(response.status, strip_hop_by_hop(response.headers)), response_body


def _request_wire(request: UpstreamRequest, body: Body) -> tuple[bytes, bytes | None, bool]:
    """The request head's bytes (and the body's when it is all in memory: one write),
    the whole body if so, and whether the body goes chunked; raises :class:`ParseError`."""
    headers: list[tuple[str, str]] = [("host", request.authority)]
    headers.extend(kv for kv in request.headers if kv[0] != "content-length")
    whole = body.ready()
    chunked = False
    if whole is not None:
        if whole or not body.empty:
            headers.append(("content-length", str(len(whole))))
    elif body.length is not None:
        headers.append(("content-length", str(body.length)))
    else:
        headers.append(("transfer-encoding", "chunked"))
        chunked = True
    head = request_head_bytes(request.method, request.target, tuple(headers))
    return (head + whole if whole else head), whole, chunked
