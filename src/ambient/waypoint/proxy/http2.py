"""HTTP/2 clients inside a tunnel (h2c with prior knowledge): many concurrent streams, flow control.

The protocol is ``h2server.H2Server`` (sans-io; it replaced h2 here, which
cost about a quarter of a gRPC call's CPU), driven by one reader loop per
tunnel; each request runs in its own task. Back-pressure both ways rides on HTTP/2 flow control:

- request bodies: received DATA is acknowledged (the window reopened) only
  when the upstream has taken it, so a stream holds at most its window
  (``STREAM_WINDOW``) and the tunnel at most ``CONNECTION_WINDOW``;
- response bodies: sent as the client's windows allow; a sender waits for
  WINDOW_UPDATE, and for the tunnel's own write queue to drain.

Trailers travel both ways (a request's trailing HEADERS become its body's
``trailers``; ``end(trailers)`` sends the response's), so gRPC works end to end.

Extended CONNECT (RFC 8441, ``:protocol websocket``; SETTINGS_ENABLE_CONNECT_PROTOCOL
is advertised) is served as an upgrade (``proxy.upgrade``): the stream's DATA
is the pipe once answered ``200``. A plain ``CONNECT`` is refused ``403``, as
Envoy without a CONNECT upgrade config.

A client reset (RST_STREAM) aborts that request only, and cancels its task,
so its upstream exchange is cancelled too (a dial under way is closed, an
upstream request already sent is reset: RST_STREAM upstream for HTTP/2), as
Envoy resets the upstream stream when the downstream one is reset. A protocol
error ends the tunnel with GOAWAY; so does abuse (``http2.guard``: too many
requests reset before their answer started, PING/SETTINGS or idle-frame
floods, a header block past the advertised header list size), with
ENHANCE_YOUR_CALM. Reading waits while the tunnel's own write queue is full,
so replies a client does not read cannot pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ambient.hbone.errors import HboneError
from ambient.hbone.stream import HboneStream
from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    GoAway,
    HeadersReceived,
    StreamReset,
    WindowOpened,
)
from ambient.http2.guard import DEFAULT_LIMITS, Abuse, FloodGuard
from ambient.taskdump import register
from ambient.waypoint.model import Headers, RequestHead
from ambient.waypoint.proxy import h2server as h2s
from ambient.waypoint.proxy.fieldtext import decimal
from ambient.waypoint.proxy.messages import BodyAborted, DownstreamGone, ResponseHead

if TYPE_CHECKING:
    from ambient.waypoint.proxy.accesslog import RequestRecord
    from ambient.waypoint.proxy.server import Tunnel

__all__ = ["serve_http2"]

PROTOCOL = "HTTP/2"
STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 1000
MAX_HEADER_LIST_SIZE = 64 * 1024
READ_SIZE = 256 * 1024


class _Stream:
    """One request's state on the tunnel."""

    __slots__ = (
        "chunks",
        "conn",
        "empty",
        "ended",
        "length",
        "record",
        "reset",
        "sent_head",
        "stream_id",
        "task",
        "trailers",
        "waiter",
        "window",
    )

    def __init__(self, conn: _Connection, stream_id: int, length: int | None, ended: bool) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.chunks: deque[tuple[bytes, int]] = deque()  # (data, flow-controlled length)
        self.ended = ended
        self.empty = ended
        self.length = length
        self.reset = False
        self.sent_head = False
        self.trailers: Headers = ()
        self.record: RequestRecord | None = None
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None  # body reader waiting for DATA
        self.window: asyncio.Future[None] | None = None  # sender waiting for WINDOW_UPDATE

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def wake_sender(self) -> None:
        if self.window is not None and not self.window.done():
            self.window.set_result(None)

    # -- Body (the request body) ---------------------------------------------------------

    async def read(self) -> bytes:
        while not self.chunks:
            if self.reset:
                raise BodyAborted("client reset the stream mid-body")
            if self.ended:
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
        """The whole body once the client ended the stream (a small request's usual case)."""
        if not self.ended or self.reset:
            return None
        chunks = self.chunks
        if len(chunks) == 1:  # the usual small request: one DATA frame
            data, flow = chunks.pop()
        else:
            data = b"".join(chunk for chunk, _ in chunks)
            flow = sum(size for _, size in chunks)
            chunks.clear()
        self.conn.acknowledge(self.stream_id, flow)
        return data

    # -- ResponseSink --------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.sent_head

    async def send_head(self, head: ResponseHead, *, end: bool, close: bool = False) -> None:
        if self.reset:
            raise DownstreamGone("client reset the stream")
        self.sent_head = True
        headers = [(":status", str(head.status))]
        headers.extend(head.headers)
        self.conn.call(lambda codec: codec.send_headers(self.stream_id, headers, end))
        await self.conn.drain()

    async def send_whole(self, head: ResponseHead, data: bytes, trailers: Headers = ()) -> None:
        """HEADERS, DATA and the end (trailers or END_STREAM) in one write when the client's
        window takes the body; else as ``send_head``, ``send_data`` and ``end`` would."""
        if self.reset or self.conn.dead:
            raise DownstreamGone("client reset the stream")
        try:
            fits = len(data) <= self.conn.codec.window(self.stream_id)
        except h2s.StreamGone:
            raise DownstreamGone("HTTP/2 stream closed") from None
        if not fits:
            await self.send_head(head, end=False)
            await self.send_data(data)
            await self.end(trailers)
            return
        self.sent_head = True
        headers = [(":status", str(head.status))]
        headers.extend(head.headers)
        stream_id = self.stream_id

        def whole(codec: h2s.H2Server) -> None:
            codec.send_headers(stream_id, headers, not data and not trailers)
            if data:
                codec.send_data(stream_id, data, not trailers)
            if trailers:
                codec.send_headers(stream_id, list(trailers), True)

        self.conn.call(whole)
        await self.conn.drain()

    async def send_data(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.reset or self.conn.dead:
                raise DownstreamGone("client reset the stream")
            try:
                window = self.conn.codec.window(self.stream_id)
            except h2s.StreamGone:
                raise DownstreamGone("HTTP/2 stream closed") from None
            if window <= 0:
                self.window = asyncio.get_running_loop().create_future()
                try:
                    await self.window
                finally:
                    self.window = None
                continue
            piece, view = bytes(view[:window]), view[window:]
            self.conn.call(functools.partial(_send_data, stream_id=self.stream_id, data=piece))
            await self.conn.drain()

    async def end(self, trailers: Headers = ()) -> None:
        if self.reset:
            raise DownstreamGone("client reset the stream")
        if trailers:
            fields = list(trailers)
            self.conn.call(lambda codec: codec.send_headers(self.stream_id, fields, True))
        else:
            self.conn.call(lambda codec: codec.end_stream(self.stream_id))

    # -- DownstreamPipe (extended CONNECT) -------------------------------------------------

    async def accept(self, head: ResponseHead) -> int:
        """``200`` for the upgrade (RFC 8441): no Upgrade/Connection, no Sec-WebSocket-Accept."""
        dropped = ("connection", "upgrade", "sec-websocket-accept", "content-length",
                   "transfer-encoding", "keep-alive")  # fmt: skip
        kept = [(k, v) for k, v in head.headers if k not in dropped]
        await self.send_head(ResponseHead(200, tuple(kept)), end=False)
        return 200

    async def write(self, data: bytes) -> None:
        await self.send_data(data)

    def write_eof(self) -> None:
        with contextlib.suppress(DownstreamGone):
            self.conn.call(lambda codec: codec.end_stream(self.stream_id))

    def abort(self) -> None:
        if not self.reset:
            self.reset = True
            self.conn.call(lambda codec: codec.reset(self.stream_id, h2s.INTERNAL_ERROR))


def _send_data(codec: h2s.H2Server, *, stream_id: int, data: bytes) -> None:
    codec.send_data(stream_id, data)


class _Connection:
    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.stream: HboneStream = tunnel.stream
        # What we send comes validated (the upstream codecs check responses; local answers
        # are ours); what we receive the codec validates.
        self.guard = FloodGuard(DEFAULT_LIMITS, MAX_HEADER_LIST_SIZE)
        self.codec = h2s.H2Server(
            stream_window=STREAM_WINDOW,
            connection_window=CONNECTION_WINDOW,
            max_streams=MAX_CONCURRENT_STREAMS,
            max_header_list=MAX_HEADER_LIST_SIZE,
            guard=self.guard,
        )
        self.streams: dict[int, _Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.dead = False
        _LIVE.add(self)

    def describe(self) -> dict[str, object]:
        """The tunnel's HTTP/2 state for ``/debug/tasks``: the codec's windows, and per
        request whether its sender waits for the client's window, its body reader for DATA."""
        streams = {
            s.stream_id: {"window_waiting": s.window is not None, "body_waiting": s.waiter
                          is not None, "body_chunks": len(s.chunks), "reset": s.reset}
            for s in self.streams.values()
        }  # fmt: skip
        return {"hbone_stream": self.stream.stream_id, "dead": self.dead,
                **self.codec.describe(), "requests": streams}  # fmt: skip

    def call(self, action: Callable[[h2s.H2Server], None]) -> None:
        """Run a codec action and send what it produced (a dead tunnel raises DownstreamGone)."""
        if self.dead:
            raise DownstreamGone("tunnel closed")
        try:
            action(self.codec)
        except h2s.StreamGone as exc:
            raise DownstreamGone(str(exc)) from None
        self.flush()

    def flush(self) -> None:
        data = self.codec.data_to_send()
        if data and not self.dead:
            try:
                self.stream.write(data)
            except HboneError:
                self._die()

    async def drain(self) -> None:
        try:
            await self.stream.drain()
        except HboneError:
            self._die()
            raise DownstreamGone("tunnel reset") from None

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and not self.dead:
            self.codec.acknowledge(stream_id, size)
            self.flush()

    def _die(self) -> None:
        self.dead = True
        current = asyncio.current_task()
        for s in self.streams.values():
            s.reset = True
            s.wake()
            s.wake_sender()
            if s.task is not None and s.task is not current and not s.task.done():
                s.task.cancel()  # the client is gone: so is the upstream work for it

    async def run(self, initial: bytes) -> None:
        self.codec.initiate()
        self.flush()
        data = initial
        try:
            while data:
                try:
                    self._dispatch(self.codec.receive_data(data))
                except Abuse as exc:  # too many early resets (counted as they are dispatched)
                    self._protocol_error(str(exc), exc.error_code)
                    break
                self.flush()
                if self.dead:
                    break
                await self.drain()
                data = await self.stream.read(READ_SIZE)
        except (HboneError, DownstreamGone):
            self._die()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if not self.dead:
            with contextlib.suppress(Exception):
                self.codec.close()
                self.flush()
                self.stream.write_eof()

    def _protocol_error(self, reason: str, code: int = h2s.PROTOCOL_ERROR) -> None:
        record = self.tunnel.new_record(PROTOCOL)
        record.status, record.flags, record.details = 0, "DPE", reason
        record.finish()
        self.codec.close(code, reason.encode()[:256])  # nothing if the codec already did
        self.flush()
        self._die()
        with contextlib.suppress(HboneError):
            self.stream.write_eof()

    def _dispatch(self, events: list[h2s.ServerEvent]) -> None:
        for event in events:
            if isinstance(event, DataReceived):
                s = self.streams.get(event.stream_id)
                if s is None:
                    self.acknowledge(event.stream_id, event.flow)
                    continue
                if event.data:
                    s.chunks.append((event.data, event.flow))
                elif event.flow:
                    self.acknowledge(event.stream_id, event.flow)  # padding only
                if event.end_stream:
                    s.ended = True
                s.wake()
            elif isinstance(event, WindowOpened):  # (the events most frequent first)
                if event.stream_id == 0:
                    for s in self.streams.values():
                        s.wake_sender()
                else:
                    s = self.streams.get(event.stream_id)
                    if s is not None:
                        s.wake_sender()
            elif isinstance(event, h2s.RequestReceived):
                self._on_request(event)
            elif isinstance(event, HeadersReceived):  # trailers (they end the stream)
                s = self.streams.get(event.stream_id)
                if s is not None:
                    s.trailers = event.headers
                    s.ended = True
                    s.wake()
            elif isinstance(event, StreamReset):
                s = self.streams.get(event.stream_id)
                if s is not None:
                    self._on_reset(s, counted=not event.local)
            elif isinstance(event, GoAway):
                self.dead = self.dead or event.error_code != h2s.NO_ERROR
            elif isinstance(event, ConnectionLost):
                self._protocol_error(event.reason, event.error_code)

    def _on_reset(self, s: _Stream, counted: bool = True) -> None:
        """A request was reset (by the client, or by the codec for a stream error): cancel
        its work; count a client's reset if nothing was answered."""
        s.reset = True
        s.wake()
        s.wake_sender()
        if s.task is None or s.task.done():
            return
        if s.record is not None:
            s.record.flags = "DC"
        s.task.cancel()
        if counted and not s.sent_head:
            self.guard.early_reset()

    def _on_request(self, event: h2s.RequestReceived) -> None:
        pseudo, headers = event.pseudo, event.headers
        length = next((decimal(v) for k, v in headers if k == "content-length"), None)
        s = _Stream(self, event.stream_id, length, event.end_stream)
        self.streams[event.stream_id] = s
        authority = pseudo.get(":authority") or next((v for k, v in headers if k == "host"), "")
        method = pseudo.get(":method", "")
        upgrade: str | None = None
        if method == "CONNECT":  # extended CONNECT is an upgrade; plain CONNECT one Envoy refuses
            upgrade = pseudo.get(":protocol", "CONNECT")
            method = "GET" if ":protocol" in pseudo else method
        if not authority:
            s.reset = True
            self.call(lambda codec: codec.reset(event.stream_id, h2s.REFUSED_STREAM))
            del self.streams[event.stream_id]
            return
        head = RequestHead(
            method=method,
            authority=authority,
            path=pseudo.get(":path", "/"),
            headers=headers,
            scheme=pseudo.get(":scheme", "http"),
            version=PROTOCOL,
            upgrade=upgrade,
        )
        task = asyncio.ensure_future(self._serve(s, head))
        s.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, s: _Stream, head: RequestHead) -> None:
        tunnel = self.tunnel
        record = s.record = tunnel.new_record(PROTOCOL)
        try:
            pipe = s if head.upgrade is not None else None
            await tunnel.forwarder.handle(
                tunnel.target, tunnel.downstream, head, s, s, record, pipe
            )
        finally:
            self.streams.pop(s.stream_id, None)
            # Whatever the client still sends on this stream is not wanted: return its credit.
            leftover = sum(flow for _, flow in s.chunks) if s.chunks else 0
            s.chunks.clear()
            if leftover and not self.dead:
                self.codec.acknowledge(s.stream_id, leftover)
                self.flush()
            if not s.ended and not s.reset and not self.dead:
                # Response complete but the request body is still coming: stop it (RFC 9113 8.1).
                self.codec.reset(s.stream_id, h2s.NO_ERROR)
                self.flush()


_LIVE: weakref.WeakSet[_Connection] = weakref.WeakSet()
register("waypoint HTTP/2 tunnels (downstream)", lambda: [c.describe() for c in list(_LIVE)])


async def serve_http2(tunnel: Tunnel, initial: bytes) -> None:
    """Serve HTTP/2 (prior knowledge) on ``tunnel``; ``initial`` starts with the preface."""
    await _Connection(tunnel).run(initial)
