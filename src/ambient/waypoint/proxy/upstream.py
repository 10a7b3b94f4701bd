"""HTTP/1.1 to an endpoint over HBONE, with keep-alive connection reuse.

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
  have closed the idle connection just then); that is the only retry.
- The request body is sent by its own task while the response is read, so
  an upstream that answers while still receiving (echo, early 413) works
  and nothing deadlocks; back-pressure holds both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import h11

from ambient.hbone.errors import HboneError, StreamRefused
from ambient.hbone.messages import HBONE_PORT, ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.balancer import Endpoint
from ambient.waypoint.proxy.messages import Body, BodyAborted, ResponseHead, strip_hop_by_hop

__all__ = ["UpstreamClient", "UpstreamFailed", "UpstreamRequest"]

MAX_HEAD = 64 * 1024
READ_SIZE = 256 * 1024


class UpstreamFailed(Exception):
    """The upstream exchange failed; ``flag`` is Envoy's response flag (UF, UC)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    target: str  # path and query
    authority: str
    headers: Headers  # hop-by-hop fields already removed; no host


class _Connection:
    """One keep-alive HTTP/1.1 connection over an HBONE stream."""

    __slots__ = ("conn", "idle_since", "requests", "stream")

    def __init__(self, stream: HboneStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.requests = 0
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        return not self.stream.closed and not self.stream.at_eof and self.conn.our_state is h11.IDLE

    def close(self, *, idle: bool = False) -> None:
        """End the connection: FIN when it is idle or the server closed first, else reset."""
        if idle or self.stream.at_eof:
            self.stream.write_eof()
        else:
            self.stream.reset()

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.read(READ_SIZE)
            self.conn.receive_data(data)


class _ResponseBody:
    """The upstream response body, read from h11 as the downstream consumes it."""

    def __init__(self, exchange: _Exchange, length: int | None, empty: bool) -> None:
        self._exchange = exchange
        self.length = length
        self.empty = empty
        self._done = empty

    async def read(self) -> bytes:
        if self._done:
            return b""
        connection = self._exchange.connection
        try:
            while True:
                event = await connection.next_event()
                if isinstance(event, h11.Data):
                    if event.data:
                        return bytes(event.data)
                    continue
                if isinstance(event, h11.EndOfMessage):
                    self._done = True
                    self._exchange.response_complete()
                    return b""
                raise BodyAborted(f"upstream closed mid-body ({type(event).__name__})")
        except (h11.ProtocolError, HboneError) as exc:
            self._done = True
            self._exchange.fail()
            raise BodyAborted(f"upstream response body: {exc}") from None


class _Exchange:
    """One request/response on a connection; returns the connection to the pool when both end."""

    def __init__(self, client: UpstreamClient, endpoint: Endpoint, connection: _Connection) -> None:
        self.client = client
        self.endpoint = endpoint
        self.connection = connection
        self.sender: asyncio.Task[None] | None = None
        self.body_bytes_sent = 0
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
        conn = self.connection.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self.client.put_idle(self.endpoint, self.connection)
        else:
            self.connection.close()

    async def send_body(self, body: Body) -> None:
        stream, conn = self.connection.stream, self.connection.conn
        try:
            if not body.empty:
                while chunk := await body.read():
                    self.body_bytes_sent += len(chunk)
                    for piece in conn.send_with_data_passthrough(h11.Data(data=chunk)) or ():
                        stream.write(piece)
                    await stream.drain()
            stream.write(conn.send(h11.EndOfMessage()))
        except (BodyAborted, HboneError, h11.ProtocolError):
            # The client went away mid-body, or the upstream died: the exchange is over.
            self.connection.stream.reset()
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
        self._idle: dict[tuple[object, int], list[_Connection]] = {}

    async def send(
        self, endpoint: Endpoint, request: UpstreamRequest, body: Body
    ) -> tuple[ResponseHead, Body]:
        """Send ``request`` to ``endpoint``; the response head and a streaming body.

        Raises :class:`UpstreamFailed` (``UF``: could not connect; ``UC``: the
        connection ended before a response head).
        """
        connection = self._take_idle(endpoint)
        if connection is not None:
            try:
                return await self._exchange(endpoint, connection, request, body)
            except _Retryable:
                pass  # the idle connection had been closed by the server: once more, fresh
        connection = await self._connect(endpoint)
        try:
            return await self._exchange(endpoint, connection, request, body)
        except _Retryable as exc:
            raise UpstreamFailed("UC", str(exc)) from None

    def put_idle(self, endpoint: Endpoint, connection: _Connection) -> None:
        idle = self._idle.setdefault((endpoint.ip, endpoint.port), [])
        if len(idle) >= self.max_idle or not connection.usable:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def expire_idle(self) -> int:
        """Close connections idle longer than ``idle_timeout`` (called periodically)."""
        now = time.monotonic()
        closed = 0
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if now - c.idle_since < self.idle_timeout and c.usable]
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
        for idle in self._idle.values():
            for connection in idle:
                connection.close(idle=True)
        self._idle.clear()

    # -- internals -----------------------------------------------------------------

    def _take_idle(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get((endpoint.ip, endpoint.port))
        while idle:
            connection = idle.pop()
            if connection.usable and time.monotonic() - connection.idle_since < self.idle_timeout:
                return connection
            connection.close(idle=True)
        return None

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        return _Connection(await self.open_stream(endpoint))

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

    async def _exchange(
        self, endpoint: Endpoint, connection: _Connection, request: UpstreamRequest, body: Body
    ) -> tuple[ResponseHead, Body]:
        reused = connection.requests > 0
        connection.requests += 1
        exchange = _Exchange(self, endpoint, connection)
        headers: list[tuple[str, str]] = [("host", request.authority), *request.headers]
        if body.empty:
            pass
        elif body.length is not None:
            headers.append(("content-length", str(body.length)))
        else:
            headers.append(("transfer-encoding", "chunked"))
        stream, conn = connection.stream, connection.conn
        try:
            stream.write(
                conn.send(
                    h11.Request(method=request.method, target=request.target, headers=headers)
                )
            )
        except (HboneError, h11.ProtocolError) as exc:
            connection.close()
            if reused:
                raise _Retryable(str(exc)) from None
            raise UpstreamFailed("UC", f"upstream connection: {exc}") from None
        exchange.sender = asyncio.ensure_future(exchange.send_body(body))
        try:
            while True:
                event = await connection.next_event()
                if isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue: the waypoint already answered its client
                if isinstance(event, h11.Response):
                    break
                raise h11.RemoteProtocolError(f"connection closed ({type(event).__name__})")
        except (h11.ProtocolError, HboneError) as exc:
            exchange.fail()
            with contextlib.suppress(asyncio.CancelledError):
                await exchange.sender
            if reused and exchange.body_bytes_sent == 0:
                raise _Retryable(str(exc)) from None
            raise UpstreamFailed(
                "UC",
                "upstream connect error or disconnect/reset before headers. "
                f"reset reason: connection termination ({exc})",
            ) from None
        except BaseException:
            exchange.fail()
            raise
        raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
        length = next((int(v) for k, v in raw if k == "content-length" and v.isdigit()), None)
        no_body = request.method == "HEAD" or event.status_code in (204, 304) or length == 0
        response_body = _ResponseBody(exchange, length, no_body)
        if no_body:
            # h11 still has an EndOfMessage to hand out; take it so the connection can be reused.
            with contextlib.suppress(h11.ProtocolError, HboneError):
                while not isinstance(await connection.next_event(), h11.EndOfMessage):
                    pass
            exchange.response_complete()
        head = ResponseHead(event.status_code, strip_hop_by_hop(tuple(raw)))
        return head, response_body


class _Retryable(Exception):
    """A reused idle connection failed before anything was exchanged."""
