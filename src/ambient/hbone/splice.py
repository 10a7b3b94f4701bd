"""Relaying bytes between an HBONE stream and a TCP connection, both directions.

Half-close is preserved both ways (TCP FIN <-> END_STREAM). A reset on either
side aborts the other (TCP RST <-> RST_STREAM), so an application never
mistakes a broken tunnel for a clean close.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from ambient.hbone.bound import connect_from
from ambient.hbone.stream import HboneStream

TCP_WRITE_HIGH_WATER = 4 * 1024 * 1024  # bytes buffered towards a TCP peer before pausing


@dataclass(slots=True)
class RelayResult:
    """Bytes moved each way and how the relay ended."""

    to_stream: int = 0  # TCP -> HBONE
    from_stream: int = 0  # HBONE -> TCP
    error: str | None = None


class TcpRelay(asyncio.Protocol):
    """Event-driven relay between an HBONE stream and a TCP transport: no tasks, no copies.

    Nothing is read from the transport until :meth:`start` (the CONNECT answered):
    an application that speaks first (a banner, a gRPC server's SETTINGS) would
    otherwise put DATA on the stream before its 200, which peers reset as malformed.
    Bytes from the stream are written to the transport as they arrive; their
    flow-control credit is returned at once, or, while the transport's buffer
    is full, when it drains. Bytes from the transport go to the stream; reading
    pauses while the stream's queue is above its high-water mark. FIN and
    END_STREAM map to each other; a reset on either side aborts the other.
    ``done`` resolves with the byte counts once both directions are finished.
    """

    def __init__(self, stream: HboneStream) -> None:
        self.stream = stream
        self.result = RelayResult()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[RelayResult] = asyncio.get_running_loop().create_future()
        self._write_paused = False
        self._read_paused = False
        self._withheld = 0
        self._tcp_eof = False
        self._stream_eof = False
        self._started = False

    # -- asyncio.Protocol (the TCP side) ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        # Room for a whole stream window: with asyncio's 64 KiB default the first
        # 1 MiB DATA frame pauses writing, withholding credit in stop-and-go steps.
        tcp.set_write_buffer_limits(high=TCP_WRITE_HIGH_WATER)
        if not self._started:
            tcp.pause_reading()  # until start(): see the class docstring

    def start(self) -> None:
        """Begin relaying (after the CONNECT has been answered)."""
        if self.done.done():  # the TCP side is already gone (and the stream reset)
            return
        self._started = True
        self.stream.attach(self)
        if not self._read_paused and self.transport is not None and not self.done.done():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.result.to_stream += len(data)
        try:
            self.stream.write(data)
        except Exception as exc:  # the stream died: tear the TCP side down
            self._fail(exc)
            return
        if not self.stream.writable and self.transport is not None:
            self.transport.pause_reading()
            self._read_paused = True

    def eof_received(self) -> bool:
        self._tcp_eof = True
        self.stream.write_eof()
        self._maybe_finish()
        return True  # keep the transport open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        if not (self._tcp_eof and self._stream_eof):
            if exc is not None:
                self.result.error = f"{type(exc).__name__}: {exc}"
            self.stream.reset()
        # Both directions are over: the stream has nothing more for us. Letting go of it
        # breaks the relay <-> stream cycle, so both are freed as soon as the handler
        # returns instead of waiting, with their transport, for the cyclic collector.
        self.stream.detach(self)
        if not self.done.done():
            self.done.set_result(self.result)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._withheld:
            self.stream.consume(self._withheld)
            self._withheld = 0

    # -- StreamSink (the HBONE side) ----------------------------------------------------

    def on_data(self, data: bytes) -> None:
        self.result.from_stream += len(data)
        assert self.transport is not None
        self.transport.write(data)
        if self._write_paused:
            self._withheld += len(data)
        else:
            self.stream.consume(len(data))

    def on_eof(self) -> None:
        self._stream_eof = True
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self._maybe_finish()

    def on_reset(self, error: Exception) -> None:
        if self.result.error is None:
            self.result.error = f"{type(error).__name__}: {error}"
        if self.transport is not None:
            self.transport.abort()

    def on_writable(self) -> None:
        if self._read_paused and self._started and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    # -- internals -----------------------------------------------------------------

    def _maybe_finish(self) -> None:
        if self._tcp_eof and self._stream_eof and self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        self.result.error = f"{type(exc).__name__}: {exc}"
        if self.transport is not None:
            self.transport.abort()


async def connect_relay(
    stream: HboneStream,
    host: str,
    port: int,
    *,
    local_address: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
) -> TcpRelay:
    """Connect to ``host:port`` for ``stream`` (or use ``sock``, already connected there);
    raises ``OSError``. Call ``start()`` to relay."""
    loop = asyncio.get_running_loop()
    if sock is None and local_address is not None:
        sock = await connect_from(host, port, local_address)
    if sock is not None:
        _, relay_protocol = await loop.create_connection(lambda: TcpRelay(stream), sock=sock)
        return relay_protocol
    _, relay_protocol = await loop.create_connection(
        lambda: TcpRelay(stream), host, port, local_addr=local_address
    )
    return relay_protocol
