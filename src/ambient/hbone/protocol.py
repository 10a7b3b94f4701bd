"""The HBONE connection as a sans-io state machine over ``h2``.

:class:`HboneConnection` does no I/O: feed it the bytes read from the TLS
session with :meth:`receive_data`, act on the events it returns, and write
what :meth:`data_to_send` hands back. It owns everything HBONE adds on top of
HTTP/2: CONNECT-only requests, 200/400/401/503 answers, half-close, outbound
buffering within the peer's flow-control window, and inbound credit returned
only as the application consumes bytes (so a slow reader pushes back on the
sender instead of growing a buffer).

Memory is bounded by construction: inbound bytes not yet consumed are at most
the connection window (16 MiB), header blocks at most ``max_header_list_size``
(and h2's CONTINUATION backlog limit), and outbound bytes are whatever the
caller queued, which the asyncio edge caps per stream.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from enum import Enum

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ambient.hbone import _h2compat
from ambient.hbone import events as ev
from ambient.hbone.messages import BadRequest, ConnectRequest, Status

MiB = 1024 * 1024

_h2compat.install()


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


class Side(Enum):
    CLIENT = "client"
    SERVER = "server"


_DEFAULT_WINDOW = 65535


@dataclass(slots=True)
class _Outbound:
    """Bytes queued for a stream while its flow-control window is closed."""

    chunks: deque[memoryview]
    queued: int = 0
    eof_requested: bool = False
    eof_sent: bool = False


class _FrameLengthGuard:
    """Refuses an oversized frame as soon as its 9-byte header arrives.

    h2 checks a frame's length only once the whole frame is buffered, which
    would let a peer make us hold 16 MiB per connection. This walks the frame
    headers of the byte stream and fails early instead.
    """

    __slots__ = ("_header", "_max", "_skip")

    def __init__(self, preface_length: int, max_length: int) -> None:
        self._skip = preface_length
        self._header = bytearray()
        self._max = max_length

    def check(self, data: bytes) -> str | None:
        """The problem with the next frame header in ``data``, if any."""
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            chunk = data[i : i + 9 - len(self._header)]
            self._header += chunk
            i += len(chunk)
            if len(self._header) == 9:
                length = int.from_bytes(self._header[:3], "big")
                if length > self._max:
                    return f"frame of {length} bytes exceeds the {self._max}-byte maximum"
                self._skip = length
                self._header.clear()
        return None


_CLIENT_PREFACE_LENGTH = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class HboneConnection:
    """One HBONE HTTP/2 connection, client or server side, without I/O."""

    def __init__(self, side: Side, settings: HboneSettings | None = None) -> None:
        self.side = side
        self.settings = settings or HboneSettings()
        config = h2.config.H2Configuration(
            client_side=side is Side.CLIENT,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=True,
            validate_outbound_headers=True,
        )
        self._h2 = h2.connection.H2Connection(config=config)
        codes = h2.settings.SettingCodes
        initial: dict[h2.settings.SettingCodes | int, int] = {
            codes.INITIAL_WINDOW_SIZE: self.settings.stream_window,
            codes.MAX_FRAME_SIZE: self.settings.max_frame_size,
            codes.MAX_HEADER_LIST_SIZE: self.settings.max_header_list_size,
            codes.ENABLE_PUSH: 0,
        }
        if side is Side.SERVER:
            initial[codes.MAX_CONCURRENT_STREAMS] = self.settings.max_concurrent_streams
        self._initial_settings = initial
        self._guard = _FrameLengthGuard(
            _CLIENT_PREFACE_LENGTH if side is Side.SERVER else 0, self.settings.max_frame_size
        )
        self._outbound: dict[int, _Outbound] = {}
        self._open: set[int] = set()  # streams not yet fully closed or reset
        self._remote_ended: set[int] = set()  # the peer sent END_STREAM
        self.failed: str | None = None
        self.goaway_received = False

    # -- lifecycle -----------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the connection preface, our SETTINGS and the connection window."""
        self._h2.initiate_connection()
        self._h2.update_settings(self._initial_settings)
        # Apply our own values at once instead of on the peer's ACK: a peer may use
        # them as soon as it has read our SETTINGS, and being more lenient than
        # RFC 9113 requires before the ACK is harmless (and bounded by these values).
        self._h2.local_settings.acknowledge()
        self._h2.max_inbound_frame_size = self.settings.max_frame_size
        self._h2.incoming_buffer.max_frame_size = self.settings.max_frame_size
        self._h2.decoder.max_header_list_size = self.settings.max_header_list_size
        extra = self.settings.connection_window - _DEFAULT_WINDOW
        if extra > 0:
            self._h2.increment_flow_control_window(extra)

    def data_to_send(self) -> bytes:
        """Bytes to write to the TLS session now (may be empty)."""
        return self._h2.data_to_send()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Queue a GOAWAY; the caller closes the transport after writing it."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=error_code, additional_data=reason.encode()[:256])

    def ping(self, payload: bytes) -> None:
        """Queue a PING (8 bytes of payload)."""
        self._h2.ping(payload)

    @property
    def open_streams(self) -> int:
        """Streams that are neither closed nor reset."""
        return len(self._open)

    @property
    def max_outbound_streams(self) -> int:
        """How many concurrent streams the peer allows us to open."""
        return int(self._h2.remote_settings.max_concurrent_streams)

    # -- client side -----------------------------------------------------------------

    def open_stream(self, request: ConnectRequest) -> int:
        """Send a CONNECT and return its stream id (client side only)."""
        assert self.side is Side.CLIENT, "only clients open streams"
        stream_id: int = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream_id, request.to_headers(), end_stream=False)
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
        try:
            self._h2.send_headers(stream_id, [(":status", str(status))], end_stream=end)
        except h2.exceptions.ProtocolError:  # the connection failed or is closing
            end = True
        if end:
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

    def reset(self, stream_id: int, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Abort a stream with RST_STREAM."""
        if stream_id not in self._open:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, error_code=error_code)
        self._forget(stream_id)

    def consumed(self, stream_id: int, size: int) -> None:
        """The application has taken ``size`` bytes of this stream: return the credit."""
        if size <= 0:
            return
        # A stream already gone raises; h2 still keeps the connection window right.
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self._h2.acknowledge_received_data(size, stream_id)

    def queued(self, stream_id: int) -> int:
        """Bytes queued for this stream and not yet sent (for back-pressure)."""
        out = self._outbound.get(stream_id)
        return out.queued if out is not None else 0

    # -- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ev.Event]:
        """Feed bytes from the wire; returns what happened. Never raises for bad input."""
        if self.failed is not None:
            return []
        problem = self._guard.check(data)
        if problem is not None:
            return [self._fail(problem, h2.errors.ErrorCodes.FRAME_SIZE_ERROR)]
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            return [self._fail(f"HTTP/2 protocol error: {exc}", exc.error_code)]
        except Exception as exc:  # hostile input must never escape as a crash
            return [self._fail(f"malformed HTTP/2 input: {type(exc).__name__}: {exc}", 1)]
        out: list[ev.Event] = []
        for event in h2_events:
            self._translate(event, out)
        return out

    def _fail(self, reason: str, error_code: int | None) -> ev.ConnectionFailed:
        self.failed = reason
        self.close(int(error_code or h2.errors.ErrorCodes.PROTOCOL_ERROR), reason)
        return ev.ConnectionFailed(reason)

    def _translate(self, event: h2.events.Event, out: list[ev.Event]) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._on_data(event, out)
        elif isinstance(event, h2.events.RequestReceived):
            self._on_request(event, out)
        elif isinstance(event, h2.events.ResponseReceived):
            self._on_response(event, out)
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id in self._open:
                self._remote_ended.add(event.stream_id)
                out.append(ev.StreamEnded(event.stream_id))
                self._maybe_closed(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self._open:
                self._forget(event.stream_id)
                out.append(ev.StreamReset(event.stream_id, int(event.error_code), True))
        elif isinstance(event, h2.events.WindowUpdated):
            self._on_window(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._on_window(0)
        elif isinstance(event, h2.events.PingAckReceived):
            out.append(ev.PingAcknowledged(bytes(event.ping_data)))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event, out)
        # Other events (SettingsAcknowledged, PingReceived - h2 answers it -,
        # PriorityUpdated, UnknownFrameReceived, informational responses) need nothing.

    def _on_request(self, event: h2.events.RequestReceived, out: list[ev.Event]) -> None:
        stream_id = event.stream_id
        if self.side is not Side.SERVER:
            return
        self._open.add(stream_id)
        self._outbound[stream_id] = _Outbound(deque())
        try:
            request = ConnectRequest.from_headers(list(event.headers))
        except BadRequest as exc:
            self.respond(stream_id, Status.BAD_REQUEST)
            out.append(ev.ConnectRejected(stream_id, str(exc)))
            return
        out.append(ev.ConnectReceived(stream_id, request, ended=event.stream_ended is not None))

    def _on_response(self, event: h2.events.ResponseReceived, out: list[ev.Event]) -> None:
        status = 0
        for name, value in event.headers:
            if name == b":status":
                status = int(value) if value.isdigit() else 0
        out.append(ev.ResponseReceived(event.stream_id, status))
        if status != Status.OK and event.stream_id in self._open:
            # A refused tunnel carries no bytes: close our half too, drop what was queued.
            self._outbound.pop(event.stream_id, None)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.end_stream(event.stream_id)
            self._maybe_closed(event.stream_id)

    def _on_data(self, event: h2.events.DataReceived, out: list[ev.Event]) -> None:
        length = len(event.data)
        padding = event.flow_controlled_length - length
        if event.stream_id not in self._open:
            self.consumed(event.stream_id, event.flow_controlled_length)
            return
        if padding:
            self.consumed(event.stream_id, padding)
        if length:
            out.append(ev.DataReceived(event.stream_id, bytes(event.data)))

    def _on_goaway(self, event: h2.events.ConnectionTerminated, out: list[ev.Event]) -> None:
        self.goaway_received = True
        last = int(event.last_stream_id or 0)
        out.append(ev.GoAwayReceived(last, int(event.error_code or 0)))
        for stream_id in sorted(self._open):
            if self.side is Side.CLIENT and stream_id > last:
                self._forget(stream_id)
                out.append(ev.StreamReset(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM, True))

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
        h2conn = self._h2
        try:
            while out.chunks:
                window = h2conn.local_flow_control_window(stream_id)
                if window <= 0:
                    return
                size = min(window, h2conn.max_outbound_frame_size)
                head = out.chunks[0]
                if len(head) <= size:
                    out.chunks.popleft()
                    chunk = head
                else:
                    chunk = head[:size]
                    out.chunks[0] = head[size:]
                last = out.eof_requested and not out.chunks
                h2conn.send_data(stream_id, chunk, end_stream=last)  # FIN rides on the last DATA
                out.queued -= len(chunk)
                if last:
                    out.eof_sent = True
                    self._maybe_closed(stream_id)
                    return
            if out.eof_requested and not out.eof_sent:
                out.eof_sent = True
                h2conn.end_stream(stream_id)
                self._maybe_closed(stream_id)
        except h2.exceptions.ProtocolError:
            # The stream closed under us (reset by the peer): drop what was queued.
            self._forget(stream_id)

    def _maybe_closed(self, stream_id: int) -> None:
        """Forget a stream once both directions ended (by our own account, not h2's state:
        an RST_STREAM read in the same chunk as END_STREAM must still be reported)."""
        out = self._outbound.get(stream_id)
        local_done = out is None or out.eof_sent
        if stream_id in self._remote_ended and local_done:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._remote_ended.discard(stream_id)
        self._outbound.pop(stream_id, None)
