"""The asyncio edge of one HBONE connection: drives :class:`HboneConnection` over a TLS transport.

All protocol decisions live in the sans-io core (``protocol.py``); this module
only moves bytes, wakes waiting streams, sends keep-alive PINGs and tears every
stream down when the connection dies.

Reading stops while the transport cannot write and the peer keeps asking for
replies: once ``MAX_REPLY_BYTES_WHILE_PAUSED`` bytes of replies (PING and
SETTINGS ACKs, RST_STREAM for frames on closed streams) were queued since
writing paused, nothing more is read until the transport drains, so a peer
that floods without reading cannot grow our output. Reading goes on otherwise: HTTP/2 flow control already bounds DATA,
and two peers that both stopped reading whenever their output backed up could
deadlock on a busy tunnel in each direction.

Writes go to the TLS transport in batches of at most ``WRITE_SLICE`` bytes
(:func:`write_slices`). Reads are buffered (:class:`asyncio.BufferedProtocol`): the TLS layer decrypts
straight into one read buffer shared by every connection of the thread, and the
sans-io core copies out only what it keeps (tunnel payloads, partial frames). With a
plain protocol, uvloop and asyncio allocate a fresh 256 KiB ``bytes`` for every
decrypted read (an ``mmap``, its page faults and an ``munmap`` per read, then the
payload copied out of it again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ambient.hbone import events as ev
from ambient.hbone.errors import HboneError, StreamRefused, StreamReset
from ambient.hbone.messages import ConnectRequest, Status
from ambient.hbone.protocol import HboneConnection, HboneSettings, Side
from ambient.hbone.stream import WRITE_HIGH_WATER, HboneStream
from ambient.hbone.tls import PeerInfo
from ambient.taskdump import register

log = logging.getLogger("ambient.hbone")

# Replies queued while writing is paused before reading stops too: sixteen PING ACKs. A
# legitimate peer sends a PING every few seconds at most, never this many while we
# cannot write.
MAX_REPLY_BYTES_WHILE_PAUSED = 16 * 17
CLOSE_GRACE = 1.0  # seconds a failed connection has to read our GOAWAY before it is dropped

_LIVE: weakref.WeakSet[HboneTransport] = weakref.WeakSet()

WRITE_SLICE = 256 * 1024  # most plaintext handed to the TLS transport at once (see below)
READ_BUFFER = 256 * 1024  # the TLS layer reads at most this much ciphertext at a time
_shared = threading.local()  # .view: the thread's read buffer; .busy: being processed


def _read_buffer() -> memoryview:
    view: memoryview | None = getattr(_shared, "view", None)
    if view is None:
        view = _shared.view = memoryview(bytearray(READ_BUFFER))
        _shared.busy = False
    return view


class HboneTransport(asyncio.BufferedProtocol):
    """One HBONE connection (client or server side) on an established TLS transport.

    Input that arrives before :meth:`attach` (i.e. before the peer's identity
    has been verified) is held back, never acted upon.
    """

    def __init__(
        self,
        side: Side,
        settings: HboneSettings | None = None,
        *,
        on_stream: Callable[[HboneStream], None] | None = None,
    ) -> None:
        self.side = side
        self.settings = settings or HboneSettings()
        self.conn = HboneConnection(side, self.settings)
        self.streams: dict[int, HboneStream] = {}
        self.peer: PeerInfo | None = None
        self.on_stream = on_stream
        self.on_idle: Callable[[HboneTransport], None] | None = None
        self.on_closed: Callable[[HboneTransport], None] | None = None
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._held_input: list[bytes] = []
        self._rbuf: memoryview | None = None
        self._write_paused = False
        self._read_paused = False
        self._replies_at_pause = 0
        self._flush_scheduled = False
        self._drain_waiting: set[HboneStream] = set()
        self._responses: dict[int, asyncio.Future[int]] = {}
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding: bytes | None = None
        self._ping_sent_at = 0.0
        self.pings_acknowledged = 0  # keep-alive PINGs the peer answered
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        _LIVE.add(self)

    def __repr__(self) -> str:
        peer = self.peer.identity if self.peer else "?"
        return f"<HboneTransport {self.side.value} peer={peer} streams={len(self.streams)}>"

    # -- lifecycle -----------------------------------------------------------------

    def attach(self, transport: asyncio.Transport, peer: PeerInfo) -> None:
        """Start HTTP/2 on a verified TLS transport."""
        self._transport = transport
        self.peer = peer
        self.conn.initiate()
        held, self._held_input = self._held_input, []
        for data in held:
            self._process(data)
        self._flush()
        if self.settings.ping_interval > 0:
            self._ping_timer = self._loop.call_later(self.settings.ping_interval, self._keepalive)

    def close(self, reason: str = "") -> None:
        """Send GOAWAY and close; streams still open are reset."""
        if self.closed:
            return
        self.conn.close(0, reason)
        self._flush_now()
        if self._transport is not None:
            self._transport.close()
        self._teardown(f"connection closed{': ' + reason if reason else ''}")

    def abort(self, reason: str) -> None:
        """Drop the connection at once (no GOAWAY)."""
        if self._transport is not None:
            self._transport.abort()
        self._teardown(reason)

    def describe(self) -> dict[str, Any]:
        """Flow-control state, for diagnostics (``ambient.taskdump``): whether writing or
        reading is paused, the windows each way (ours to send first), every stream."""
        send, receive = self._windows(0)
        return {
            "side": self.side.value,
            "peer": self._peer_text(),
            "closed": self.closed,
            "write_paused": self._write_paused,
            "read_paused": self._read_paused,
            "windows": [send, receive],
            "drain_waiting": sorted(s.stream_id for s in self._drain_waiting),
            "streams": [
                {**s.describe(), "queued": self.conn.queued(s.stream_id),
                 "windows": self._windows(s.stream_id)}
                for s in self.streams.values()
            ],
        }  # fmt: skip

    def _windows(self, stream_id: int) -> list[int]:
        """[ours to send, the peer's] on ``stream_id`` (0: the connection), as the protocol
        counts them; [-1, -1] once it forgot the stream."""
        return self.conn.windows(stream_id)

    @property
    def accepting_streams(self) -> bool:
        """True while new streams may be opened on this connection."""
        return not self.closed and not self.conn.goaway_received and self.conn.failed is None

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        view = _read_buffer()
        if _shared.busy:  # re-entered while another connection's read is processed
            view = memoryview(bytearray(max(sizehint, 16384)))
        self._rbuf = view
        return view

    def buffer_updated(self, nbytes: int) -> None:
        view, self._rbuf = self._rbuf, None
        assert view is not None, "buffer_updated without get_buffer"
        shared = view is _read_buffer()
        if shared:
            _shared.busy = True
        try:
            self.data_received(view[:nbytes])
        finally:
            if shared:
                _shared.busy = False

    def data_received(self, data: bytes | memoryview) -> None:
        """``data`` may be a view of a buffer reused once this returns: nothing keeps it."""
        if self.peer is None:
            self._held_input.append(bytes(data))
            return
        self._process(data)
        self._flush()
        if (
            self._write_paused
            and not self._read_paused
            and self.conn.reply_bytes - self._replies_at_pause >= MAX_REPLY_BYTES_WHILE_PAUSED
            and self._transport is not None
            and not self.closed
        ):
            self._read_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close the transport: HTTP/2 has no half-closed connections

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        self._teardown(reason)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._replies_at_pause = self.conn.reply_bytes

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._read_paused:
            self._read_paused = False
            if self._transport is not None and not self.closed:
                self._transport.resume_reading()
        self._wake_drainers()

    @property
    def reading(self) -> bool:
        """False while reading is stopped because the peer does not read our replies."""
        return not self._read_paused

    # -- streams: called by HboneStream -------------------------------------------------

    def respond(self, stream: HboneStream, status: int) -> None:
        self.conn.respond(stream.stream_id, status)
        self._flush()
        if status != Status.OK:
            self._drop(stream)

    def send(self, stream: HboneStream, data: bytes | bytearray | memoryview) -> None:
        self.conn.send(stream.stream_id, data)
        self._flush()

    def end_stream(self, stream: HboneStream) -> None:
        self.conn.end_stream(stream.stream_id)
        self._flush()
        if stream.closed:
            self._drop(stream)

    def reset(self, stream: HboneStream) -> None:
        self.conn.reset(stream.stream_id)
        self._flush()
        self._drop(stream)

    def consumed(self, stream: HboneStream, size: int) -> None:
        self.conn.consumed(stream.stream_id, size)
        self._flush()

    def must_wait(self, stream: HboneStream) -> bool:
        if self._write_paused or self.conn.queued(stream.stream_id) > WRITE_HIGH_WATER:
            self._drain_waiting.add(stream)
            return True
        return False

    # -- client side ---------------------------------------------------------------

    async def open_stream(self, request: ConnectRequest) -> HboneStream:
        """Send a CONNECT and wait for the answer; raises :class:`StreamRefused` unless 200."""
        stream, response = self.start_stream(request)
        return await self.finish_stream(stream, response)

    def start_stream(self, request: ConnectRequest) -> tuple[HboneStream, asyncio.Future[int]]:
        """Send a CONNECT now (the stream counts as live at once); await ``finish_stream``."""
        if not self.accepting_streams or self.peer is None:
            raise StreamReset("HBONE connection is closing; no new streams")
        stream_id = self.conn.open_stream(request)
        stream = HboneStream(self, stream_id, request, self.peer)
        self.streams[stream_id] = stream
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._responses[stream_id] = waiter
        self._flush()
        return stream, waiter

    async def finish_stream(
        self, stream: HboneStream, response: asyncio.Future[int]
    ) -> HboneStream:
        """Wait for the answer to :meth:`start_stream`'s CONNECT."""
        try:
            status = await response
        except asyncio.CancelledError:
            stream.reset()
            raise
        finally:
            self._responses.pop(stream.stream_id, None)
        stream.status = status
        if status != Status.OK:
            self._drop(stream)
            assert self.peer is not None
            raise StreamRefused(
                status,
                f"HBONE CONNECT {stream.request.authority} via {self.peer.identity}: {_describe(status)}",
            )
        return stream

    # -- internals -----------------------------------------------------------------

    def _process(self, data: bytes | memoryview) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, ev.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is None:
                    self.conn.consumed(event.stream_id, len(event.data))
                else:
                    stream._on_data(event.data)
            elif isinstance(event, ev.ConnectReceived):
                self._on_connect(event)
            elif isinstance(event, ev.ResponseReceived):
                waiter = self._responses.get(event.stream_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event.status)
            elif isinstance(event, ev.StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream._on_eof()
                    if stream.closed:
                        self._drop(stream)
            elif isinstance(event, ev.StreamReset):
                self._on_stream_reset(event)
            elif isinstance(event, ev.PingAcknowledged):
                if event.payload == self._ping_outstanding:
                    self._ping_outstanding = None
                    self.pings_acknowledged += 1
            elif isinstance(event, ev.ConnectRejected):
                log.warning(
                    "HBONE: refused CONNECT from %s: %s (400)", self._peer_text(), event.reason
                )
            elif isinstance(event, ev.GoAwayReceived):
                log.debug("HBONE: GOAWAY from %s (code %d)", self._peer_text(), event.error_code)
            elif isinstance(event, ev.ConnectionFailed):
                log.warning(
                    "HBONE: closing connection with %s: %s", self._peer_text(), event.reason
                )
                self._close_failed()
                self._teardown(event.reason)
                return
        self._wake_drainers()

    def _close_failed(self) -> None:
        """After a protocol error or abuse: write the GOAWAY, read (and decrypt) nothing
        more, and drop the connection ``CLOSE_GRACE`` seconds later if the peer has not
        read it by then (Envoy's delayed close: 1 s)."""
        self._flush_now()
        transport = self._transport
        if transport is None:
            return
        transport.pause_reading()
        transport.close()
        self._loop.call_later(CLOSE_GRACE, transport.abort)

    def _on_connect(self, event: ev.ConnectReceived) -> None:
        assert self.peer is not None
        stream = HboneStream(self, event.stream_id, event.request, self.peer)
        self.streams[event.stream_id] = stream
        if event.ended:
            stream._on_eof()
        if self.on_stream is None:
            stream.respond(Status.BAD_REQUEST)
            return
        self.on_stream(stream)

    def _on_stream_reset(self, event: ev.StreamReset) -> None:
        error = StreamReset(
            f"HBONE stream {event.stream_id} reset by peer (code {event.error_code})"
        )
        waiter = self._responses.get(event.stream_id)
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            if event.error_code == 0 and stream._eof:
                stream._on_stop_sending()
            else:
                stream._on_reset(error)
            self._check_idle()

    def _drop(self, stream: HboneStream) -> None:
        if self.streams.pop(stream.stream_id, None) is not None:
            self._drain_waiting.discard(stream)
            self._check_idle()

    def _check_idle(self) -> None:
        if not self.streams and self.on_idle is not None and not self.closed:
            self.on_idle(self)

    def _flush(self) -> None:
        """Write what the protocol queued, once per event-loop iteration.

        Coalescing everything one iteration produced (many streams' HEADERS,
        DATA, WINDOW_UPDATEs) into one TLS write saves records and syscalls.
        """
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        buffers = self.conn.buffers_to_send()
        transport = self._transport
        if not buffers or transport is None or transport.is_closing():
            return
        total = sum(len(b) for b in buffers)
        if total <= WRITE_SLICE:
            transport.writelines(buffers)
            return
        count = -(-total // WRITE_SLICE)  # batches of equal size: no small tail
        for batch in write_slices(buffers, -(-total // count)):
            transport.writelines(batch)

    def _wake_drainers(self) -> None:
        if not self._drain_waiting or self._write_paused:
            return
        for stream in list(self._drain_waiting):
            if self.conn.queued(stream.stream_id) <= WRITE_HIGH_WATER:
                self._drain_waiting.discard(stream)
                stream._wake_drainer()

    def _keepalive(self) -> None:
        if self.closed:
            return
        now = self._loop.time()
        if self._ping_outstanding is not None:
            if now - self._ping_sent_at >= self.settings.ping_timeout:
                log.warning(
                    "HBONE: no PING answer from %s in %.0fs; closing",
                    self._peer_text(),
                    self.settings.ping_timeout,
                )
                self.abort("keep-alive timeout")
                return
        else:
            self._ping_outstanding = os.urandom(8)
            self._ping_sent_at = now
            self.conn.ping(self._ping_outstanding)
            self._flush()
        self._ping_timer = self._loop.call_later(self.settings.ping_interval, self._keepalive)

    def _teardown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        error = StreamReset(f"HBONE {reason}")
        for waiter in self._responses.values():
            if not waiter.done():
                waiter.set_exception(error)
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream._on_reset(error)
        self._drain_waiting.clear()
        if self.on_closed is not None:
            self.on_closed(self)
        if not self.done.done():
            self.done.set_result(None)

    def _peer_text(self) -> str:
        if self.peer is None:
            return "unverified peer"
        host, port = self.peer.address[:2]
        return f"{host}:{port} ({self.peer.identity})"


register("HBONE connections", lambda: [c.describe() for c in list(_LIVE)])


def write_slices(
    buffers: list[bytes | memoryview], limit: int = WRITE_SLICE
) -> list[list[bytes | memoryview]]:
    """``buffers`` regrouped (large ones cut, never copied) into batches of at most ``limit``
    bytes, in order: one ``writelines`` per batch. The TLS transport encrypts each call
    whole into an OpenSSL memory BIO, which keeps its largest size for the life of the
    connection, and reads it out as one new ``bytes`` (an ``mmap`` and its page faults
    above 128 KiB): a 4 MiB write left ~5 MB allocated per pooled connection."""
    batches: list[list[bytes | memoryview]] = []
    batch: list[bytes | memoryview] = []
    room = limit
    for buffer in buffers:
        view: bytes | memoryview = buffer
        while view:
            if not room:
                batches.append(batch)
                batch, room = [], limit
            if len(view) <= room:
                batch.append(view)
                room -= len(view)
                break
            if not isinstance(view, memoryview):
                view = memoryview(view)
            batch.append(view[:room])
            view, room = view[room:], 0
    if batch:
        batches.append(batch)
    return batches


def _describe(status: int) -> str:
    meanings: dict[int, str] = {
        Status.BAD_REQUEST: "400 bad request (target not served by this peer)",
        Status.UNAUTHORIZED: "401 denied by policy",
        Status.SERVICE_UNAVAILABLE: "503 upstream unreachable",
    }
    return meanings.get(status, f"unexpected status {status}")


__all__ = ["HboneError", "HboneTransport"]
