"""The HBONE connection as a sans-io state machine (over ``hbone.core``).

:class:`HboneConnection` does no I/O: feed it the bytes read from the TLS
session with :meth:`receive_data`, act on the events it returns, and write
what :meth:`data_to_send` hands back. It owns everything HBONE adds on top of
HTTP/2: CONNECT-only requests, 200/400/401/503 answers, half-close, outbound
buffering within the peer's flow-control window, and inbound credit returned
only as the application consumes bytes (so a slow reader pushes back on the
sender instead of growing a buffer).

Memory is bounded by construction: inbound bytes not yet consumed are at most the
connection window (16 MiB), header blocks at most ``max_header_list_size`` (the
``FloodGuard`` refuses a longer one on its frame header), outbound bytes what the
asyncio edge lets a stream queue.

The HTTP/2 underneath is ``core.HboneCore``, a role of the project's own HTTP/2 core
(``ambient.http2``): frames, windows, stream states, header blocks, the abuse
budgets. DATA payloads are delivered as they arrive (a 1 MiB frame is not buffered
whole). Outbound, DATA frames are serialised here: a 9-byte header from the core
(which debits its windows) and the payload, never larger than the peer's maximum
frame size and window; a large payload is handed to ``writelines`` uncopied
(:meth:`HboneConnection.buffers_to_send`), the core's own frames taken first so
frames leave in order.

Header blocks: how ours are encoded and how the peer's are checked, ``fields`` and
``core``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from ambient.hbone import events as ev
from ambient.hbone.core import HboneCore
from ambient.hbone.messages import ConnectRequest, Status
from ambient.http2.connection import CANCEL, PROTOCOL_ERROR, REFUSED_STREAM
from ambient.http2.events import WindowOpened
from ambient.http2.guard import DEFAULT_LIMITS, FloodGuard, FloodLimits

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HboneSettings:
    """HTTP/2 parameters of an HBONE connection (Istio ztunnel's defaults)."""

    stream_window: int = 4 * MiB
    connection_window: int = 16 * MiB
    max_frame_size: int = 1 * MiB
    max_header_list_size: int = 16 * 1024
    max_concurrent_streams: int = 1000  # inbound, server side
    ping_interval: float = 10.0
    ping_timeout: float = 20.0
    limits: FloodLimits = DEFAULT_LIMITS  # abuse budgets per connection (``http2.guard``)


class Side(Enum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(slots=True)
class _Outbound:
    """Bytes queued for a stream while its flow-control window is closed."""

    chunks: deque[memoryview]
    queued: int = 0
    eof_requested: bool = False
    eof_sent: bool = False


_FRAME_HEADER = 9
_TLS_RECORD = 16384  # maximum TLS plaintext record


class HboneConnection:
    """One HBONE HTTP/2 connection, client or server side, without I/O."""

    def __init__(self, side: Side, settings: HboneSettings | None = None) -> None:
        self.side = side
        self.settings = settings = settings or HboneSettings()
        guard = FloodGuard(
            settings.limits, settings.max_header_list_size, max_frame_size=settings.max_frame_size
        )
        self._core = HboneCore(
            side is Side.CLIENT,
            stream_window=settings.stream_window,
            connection_window=settings.connection_window,
            max_frame_size=settings.max_frame_size,
            max_header_list=settings.max_header_list_size,
            max_streams=settings.max_concurrent_streams,
            guard=guard,
        )
        # Outbound: bytes ready for the wire, in order (the core's frames, our DATA frames).
        self._wire: list[bytes | memoryview] = []
        self._outbound: dict[int, _Outbound] = {}
        self._open: set[int] = set()  # streams not yet fully closed or reset
        self._remote_ended: set[int] = set()  # the peer sent END_STREAM
        self.failed: str | None = None
        self.goaway_received = False

    @property
    def reply_bytes(self) -> int:
        """Bytes queued in answer to what was read (PING and SETTINGS ACKs, RST_STREAM
        for frames on closed streams), so far: replies the peer owes reading."""
        return self._core.reply_bytes

    # -- lifecycle -----------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the connection preface, our SETTINGS and the connection window.

        Our values apply at once instead of on the peer's ACK: a peer may use them as
        soon as it has read our SETTINGS, and being more lenient than RFC 9113 requires
        before the ACK is harmless (and bounded by these values)."""
        self._core.initiate()

    def data_to_send(self) -> bytes:
        """Bytes to write to the TLS session now (may be empty)."""
        pending = self._core.data_to_send()
        if not self._wire:
            return pending
        wire, self._wire = self._wire, []
        wire.append(pending)
        return b"".join(wire)

    def buffers_to_send(self) -> list[bytes | memoryview]:
        """The same bytes as :meth:`data_to_send`, as a list for ``writelines``: small
        pieces are joined (a TLS record each would be wasteful), large payloads are
        passed as they are instead of being copied once more. The buffers passed to
        :meth:`send` must not be changed until written."""
        wire, self._wire = self._wire, []
        pending = self._core.data_to_send()
        if pending:
            wire.append(pending)
        out: list[bytes | memoryview] = []
        small: list[bytes | memoryview] = []
        for piece in wire:
            if len(piece) < _TLS_RECORD or (small and not isinstance(piece, memoryview)):
                small.append(piece)  # (a frame's header and first record: joined anyway)
                continue
            if small:
                out.append(b"".join(small))
                small = []
            out.append(piece)
        if small:
            out.append(b"".join(small))
        return out

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Queue a GOAWAY; the caller closes the transport after writing it."""
        self._core.close(error_code, reason.encode()[:256])

    def ping(self, payload: bytes) -> None:
        """Queue a PING (8 bytes of payload)."""
        self._core.ping(payload)

    @property
    def open_streams(self) -> int:
        """Streams that are neither closed nor reset."""
        return len(self._open)

    @property
    def max_outbound_streams(self) -> int:
        """How many concurrent streams the peer allows us to open."""
        return self._core.peer_max_streams

    def windows(self, stream_id: int) -> list[int]:
        """[ours to send, the peer's] on ``stream_id`` (0: the connection), for
        diagnostics; [-1, -1] once the stream is gone."""
        return self._core.windows(stream_id)

    # -- client side -----------------------------------------------------------------

    def open_stream(self, request: ConnectRequest) -> int:
        """Send a CONNECT and return its stream id (client side only)."""
        assert self.side is Side.CLIENT, "only clients open streams"
        stream_id = self._core.open_stream(request)
        self._open.add(stream_id)
        self._outbound[stream_id] = _Outbound(deque())
        return stream_id

    # -- server side -----------------------------------------------------------------

    def respond(self, stream_id: int, status: int) -> None:
        """Answer a CONNECT: 200 opens the tunnel, anything else ends the stream."""
        assert self.side is Side.SERVER, "only servers respond"
        if stream_id not in self._open:
            return
        end = status != Status.OK
        sent = self._core.respond(stream_id, status, end)
        if sent is None:  # answered already
            return
        if not sent or end:  # a refusal, or the connection failed
            self._forget(stream_id)

    # -- both sides: tunnel bytes --------------------------------------------------------

    def send(self, stream_id: int, data: bytes | bytearray | memoryview) -> None:
        """Queue tunnel bytes; they go out as the peer's window allows."""
        out = self._outbound.get(stream_id)
        if out is None or out.eof_requested or not data or self.failed is not None:
            return
        view = memoryview(data)
        out.chunks.append(view)
        out.queued += len(view)
        self._flush(stream_id, out)

    def end_stream(self, stream_id: int) -> None:
        """Half-close our direction once everything queued has been sent."""
        out = self._outbound.get(stream_id)
        if out is None or out.eof_requested or self.failed is not None:
            return
        out.eof_requested = True
        self._flush(stream_id, out)

    def reset(self, stream_id: int, error_code: int = CANCEL) -> None:
        """Abort a stream with RST_STREAM."""
        if stream_id not in self._open:
            return
        self._core.reset(stream_id, error_code)
        self._forget(stream_id)

    def consumed(self, stream_id: int, size: int) -> None:
        """The application has taken ``size`` bytes of this stream: return the credit."""
        if size > 0:
            self._core.acknowledge(stream_id, size)

    def queued(self, stream_id: int) -> int:
        """Bytes queued for this stream and not yet sent (for back-pressure)."""
        out = self._outbound.get(stream_id)
        return out.queued if out is not None else 0

    # -- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview) -> list[ev.Event]:
        """Feed bytes from the wire (kept parts copied); what happened. Never raises."""
        if self.failed is not None:
            return []
        out: list[ev.Event] = []
        try:
            events = self._core.receive_data(data)
        except Exception as exc:  # hostile input must never escape as a crash
            reason = f"malformed HTTP/2 input: {type(exc).__name__}: {exc}"
            self._core.close(PROTOCOL_ERROR, reason.encode()[:256])
            events = [ev.ConnectionFailed(reason)]
        for event in events:
            if isinstance(event, ev.DataReceived):
                if event.stream_id in self._open:
                    out.append(event)
                else:  # reset meanwhile (or refused): nobody will consume it
                    self.consumed(event.stream_id, len(event.data))
            elif isinstance(event, WindowOpened):
                self._on_window(event.stream_id)
            else:
                self._translate(event, out)
        return ev.without_stillborn(out) if self.side is Side.SERVER else out

    def _translate(self, event: ev.Event, out: list[ev.Event]) -> None:
        if isinstance(event, ev.StreamEnded):
            if event.stream_id in self._open:
                self._remote_ended.add(event.stream_id)
                out.append(event)
                self._maybe_closed(event.stream_id)
        elif isinstance(event, ev.ConnectReceived):
            self._open.add(event.stream_id)
            self._outbound[event.stream_id] = _Outbound(deque())
            out.append(event)
        elif isinstance(event, ev.ResponseReceived):
            self._on_response(event, out)
        elif isinstance(event, ev.StreamReset):
            if event.stream_id in self._open:
                self._forget(event.stream_id)
                out.append(event)
        elif isinstance(event, ev.GoAwayReceived):
            self._on_goaway(event, out)
        elif isinstance(event, ev.ConnectionFailed):
            self.failed = event.reason
            out.append(event)
        else:  # ConnectRejected (answered 400 already), PingAcknowledged
            out.append(event)

    def _on_response(self, event: ev.ResponseReceived, out: list[ev.Event]) -> None:
        out.append(event)
        if event.status != Status.OK and event.stream_id in self._open:
            # A refused tunnel carries no bytes: close our half too, drop what was queued.
            self._outbound.pop(event.stream_id, None)
            self._core.end_stream(event.stream_id)
            self._maybe_closed(event.stream_id)

    def _on_goaway(self, event: ev.GoAwayReceived, out: list[ev.Event]) -> None:
        self.goaway_received = True
        out.append(event)
        last = event.last_stream_id
        for stream_id in sorted(self._open):
            if self.side is Side.CLIENT and stream_id > last:
                self._core.forget(stream_id)
                self._forget(stream_id)
                out.append(ev.StreamReset(stream_id, REFUSED_STREAM, True))

    # -- flow control --------------------------------------------------------------------

    def _on_window(self, stream_id: int) -> None:
        if stream_id:
            out = self._outbound.get(stream_id)
            if out is not None:
                self._flush(stream_id, out)
            return
        for sid, out in list(self._outbound.items()):
            if out.queued or (out.eof_requested and not out.eof_sent):
                self._flush(sid, out)

    def _flush(self, stream_id: int, out: _Outbound) -> None:
        core = self._core
        if core.dead:
            return
        wire = self._wire
        while out.chunks:
            size = min(core.window(stream_id), core.frame_size)
            if size <= 0:
                return
            head = out.chunks[0]
            if len(head) <= size:
                out.chunks.popleft()
                chunk = head
            else:
                chunk = head[:size]
                out.chunks[0] = head[size:]
            last = out.eof_requested and not out.chunks  # FIN rides on the last DATA
            earlier = core.data_to_send()
            if earlier:
                wire.append(earlier)
            size = len(chunk)
            header = core.data_header(stream_id, size, last)
            if size < _TLS_RECORD:
                wire += (header, chunk)
            else:  # the header rides in a full first record; the rest goes uncopied
                first = _TLS_RECORD - _FRAME_HEADER
                wire += (header + chunk[:first], chunk[first:])
            out.queued -= size
            if last:
                out.eof_sent = True
                self._maybe_closed(stream_id)
                return
        if out.eof_requested and not out.eof_sent:
            out.eof_sent = True
            core.end_stream(stream_id)
            self._maybe_closed(stream_id)

    def _maybe_closed(self, stream_id: int) -> None:
        """Forget a stream once both directions ended (by our own account, not the core's:
        an RST_STREAM read in the same chunk as END_STREAM must still be reported)."""
        out = self._outbound.get(stream_id)
        local_done = out is None or out.eof_sent
        if stream_id in self._remote_ended and local_done:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._remote_ended.discard(stream_id)
        self._outbound.pop(stream_id, None)
