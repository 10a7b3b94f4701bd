"""One HBONE tunnel as the application sees it: read, write, half-close, reset."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ambient.hbone.errors import StreamClosed, StreamReset
from ambient.hbone.messages import ConnectRequest
from ambient.hbone.tls import PeerInfo

if TYPE_CHECKING:
    from ambient.hbone.connection import HboneTransport

# Bytes queued per stream beyond which ``drain()`` waits for the peer's window.
WRITE_HIGH_WATER = 1024 * 1024


class HboneStream:
    """A CONNECT stream carrying one TCP connection's bytes.

    Reading returns ``b""`` once the peer half-closed (END_STREAM) and raises
    :class:`StreamReset` if the stream or its connection was torn down, so a
    relay can tell a clean close from a broken one.
    """

    __slots__ = (
        "_abandoned",
        "_buffer",
        "_buffered",
        "_conn",
        "_discard_writes",
        "_drain_waiter",
        "_eof",
        "_eof_sent",
        "_error",
        "_read_waiter",
        "_sink",
        "peer",
        "request",
        "status",
        "stream_id",
    )

    def __init__(
        self, conn: HboneTransport, stream_id: int, request: ConnectRequest, peer: PeerInfo
    ) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.request = request
        self.peer = peer
        self.status: int | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._eof_sent = False
        self._discard_writes = False
        self._error: StreamReset | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._sink: StreamSink | None = None
        self._abandoned: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"<HboneStream {self.stream_id} {self.request.authority} peer={self.peer.identity}>"

    # -- server side ---------------------------------------------------------------

    def respond(self, status: int) -> None:
        """Answer the CONNECT (server side). 200 opens the tunnel; others end it."""
        if self.status is not None:
            return
        self.status = status
        self._abandoned = None  # answered: a later reset abandons nothing (and no cycle stays)
        self._conn.respond(self, status)

    def on_abandoned(self, callback: Callable[[], object]) -> None:
        """Server side: call ``callback`` (once) if the stream is reset, by the peer or
        by the end of its connection, before it was answered: whatever was started
        for it (an upstream dial) is no longer wanted."""
        self._abandoned = callback

    # -- reading -------------------------------------------------------------------

    async def read(self, max_bytes: int = -1) -> bytes:
        """Up to ``max_bytes`` (all buffered if -1); ``b""`` at end of stream."""
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            waiter = asyncio.get_running_loop().create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                self._read_waiter = None
        chunk = self._buffer.popleft()
        if 0 <= max_bytes < len(chunk):
            self._buffer.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._buffered -= len(chunk)
        self._conn.consumed(self, len(chunk))
        return chunk

    def describe(self) -> dict[str, object]:
        """This stream's side of the state for diagnostics (``HboneTransport.describe``)."""
        return {
            "id": self.stream_id,
            "authority": str(self.request.authority),
            "status": self.status,
            "buffered": self._buffered,
            "push": self._sink is not None,
            "eof_received": self._eof,
            "eof_sent": self._eof_sent,
            "error": str(self._error) if self._error is not None else None,
            "reader_waiting": self._read_waiter is not None,
            "drain_waiting": self._drain_waiter is not None and not self._drain_waiter.done(),
        }

    @property
    def at_eof(self) -> bool:
        """The peer half-closed and everything it sent has been read."""
        return self._eof and not self._buffer

    # -- writing -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for the peer; call :meth:`drain` to respect back-pressure.

        ``data`` is sent without copying: a mutable buffer must stay unchanged."""
        if self._discard_writes:
            return
        if self._error is not None:
            raise self._error
        if self._eof_sent:
            raise StreamClosed(f"stream {self.stream_id}: write after write_eof()")
        self._conn.send(self, data)

    async def drain(self) -> None:
        """Wait until the queued bytes fall below the high-water mark (or raise if reset).

        Several tasks may wait at once (an HTTP/2 tunnel's responses and its frame
        reader share the stream): they share one future, so a wake-up wakes them all,
        and one of them cancelled (shielded) leaves the others waiting."""
        while True:
            if self._error is not None:
                raise self._error
            if not self._conn.must_wait(self):
                return
            waiter = self._drain_waiter
            if waiter is None or waiter.done():
                waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiter)

    @property
    def writable(self) -> bool:
        """True while more may be written without waiting; else ``on_writable`` follows."""
        return self._error is None and not self._conn.must_wait(self)

    def write_eof(self) -> None:
        """Half-close: END_STREAM after the queued bytes."""
        if self._eof_sent or self._error is not None:
            return
        self._eof_sent = True
        self._conn.end_stream(self)

    def reset(self) -> None:
        """Abort the stream (RST_STREAM CANCEL)."""
        self._abandoned = None  # our own decision: the caller knows
        if self._error is None:
            self._conn.reset(self)
            self._on_reset(StreamReset(f"stream {self.stream_id} reset locally"))

    @property
    def closed(self) -> bool:
        """True once both directions are done or the stream was reset."""
        return self._error is not None or (self._eof and self._eof_sent)

    # -- push mode -------------------------------------------------------------------

    def attach(self, sink: StreamSink) -> None:
        """Deliver incoming bytes to ``sink`` as they arrive instead of through :meth:`read`.

        The sink returns flow-control credit itself with :meth:`consume`, once
        it has passed the bytes on, so a slow consumer still pushes back.
        """
        self._sink = sink
        buffered, self._buffer = self._buffer, deque()
        self._buffered = 0
        for chunk in buffered:
            sink.on_data(chunk)
        if self._error is not None:
            sink.on_reset(self._error)
        elif self._eof:
            sink.on_eof()

    def detach(self, sink: StreamSink) -> None:
        """Push mode: ``sink`` wants no more events (its side is closed). The stream keeps
        no reference to it, so the two do not hold each other in a reference cycle."""
        if self._sink is sink:
            self._sink = None

    def consume(self, size: int) -> None:
        """Push mode: ``size`` delivered bytes were passed on; reopen the window."""
        self._conn.consumed(self, size)

    # -- called by the connection ------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.on_data(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        self._wake_reader()

    def _on_eof(self) -> None:
        self._eof = True
        if self._sink is not None:
            self._sink.on_eof()
            return
        self._wake_reader()

    def _on_stop_sending(self) -> None:
        """RST_STREAM(NO_ERROR) after the peer's END_STREAM: a clean end, not an error.

        The peer has finished and wants no more from us (RFC 9113 8.1); what
        it sent stays readable and further writes are dropped.
        """
        self._discard_writes = True
        self._eof_sent = True
        self._wake_drainer()

    def _on_reset(self, error: StreamReset) -> None:
        first = self._error is None
        if first:
            self._error = error
        abandoned, self._abandoned = self._abandoned, None
        if abandoned is not None and self.status is None:
            abandoned()
        if self._sink is not None and first:
            self._sink.on_reset(error)
        self._wake_reader()
        self._wake_drainer()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drainer(self) -> None:
        if self._sink is not None:
            self._sink.on_writable()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class StreamSink(Protocol):
    """Receives a stream's events in push mode (see :meth:`HboneStream.attach`)."""

    def on_data(self, data: bytes) -> None: ...

    def on_eof(self) -> None: ...

    def on_reset(self, error: StreamReset) -> None: ...

    def on_writable(self) -> None: ...
