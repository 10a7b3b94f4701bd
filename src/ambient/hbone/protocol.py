"""The HBONE connection as a sans-io state machine over ``h2``.

:class:`HboneConnection` does no I/O: feed it the bytes read from the TLS
session with :meth:`receive_data`, act on the events it returns, and write
what :meth:`data_to_send` hands back. It owns everything HBONE adds on top of
HTTP/2: CONNECT-only requests, 200/400/401/503 answers, half-close, outbound
buffering within the peer's flow-control window, and inbound credit returned
only as the application consumes bytes (so a slow reader pushes back on the
sender instead of growing a buffer).

Memory is bounded by construction: inbound bytes not yet consumed are at most the
connection window (16 MiB), header blocks at most ``max_header_list_size`` (and h2's
CONTINUATION backlog limit), outbound bytes what the asyncio edge lets a stream queue.

DATA fast path. ``h2`` costs several object allocations and three payload
copies per DATA frame, which dominated the tunnel's CPU. So DATA frames of
open streams bypass it both ways, while h2 keeps every other frame and all of
the state: inbound, the connection splits the byte stream into frames itself
and hands h2 whole frames, except a DATA frame (no padding, no END_STREAM) of
a stream h2 holds open for receiving, outside a header block, whose payload is
delivered straight away, even before the frame is complete; its length is
charged to h2's own connection and stream window managers first, so a peer
that overruns a window fails exactly as in h2 (FLOW_CONTROL_ERROR) and credit
is returned through h2 as before. Outbound, a DATA frame without END_STREAM
for a stream h2 holds open for sending is serialised here (9-byte header and
the payload, never larger than the peer's maximum frame size and window) and
h2's outbound windows are debited by its size; bytes h2 queued earlier are
taken first so frames leave in order. Anything else (padding, END_STREAM, a
stream in another state, a connection that is closing) takes the h2 path.

Header blocks: how ours are encoded and how the peer's are checked, ``fields``.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from enum import Enum

import h2.config
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.connection import ConnectionState
from h2.stream import StreamState

from ambient.hbone import _h2compat
from ambient.hbone import events as ev
from ambient.hbone.fields import UNINDEXED, BadBlock, Block, PlainEncoder, check_block
from ambient.hbone.messages import BadRequest, ConnectRequest, Status
from ambient.http2.guard import DEFAULT_LIMITS, RST_STREAM, Abuse, FloodGuard, FloodLimits

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
    limits: FloodLimits = DEFAULT_LIMITS  # abuse budgets per connection (``http2.guard``)


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


_FRAME_HEADER = 9
_TLS_RECORD = 16384  # maximum TLS plaintext record
_DATA = 0x0
_END_STREAM_OR_PADDED = 0x1 | 0x8
_OPEN_CONNECTION = (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)
_RECEIVING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)  # may receive DATA
_SENDING = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)  # may send DATA


# Header blocks h2 reports, checked by ``fields`` (h2's own checks are off: slower).
_BLOCKS = {h2.events.RequestReceived: Block.REQUEST, h2.events.ResponseReceived: Block.RESPONSE,
           h2.events.InformationalResponseReceived: Block.RESPONSE,
           h2.events.TrailersReceived: Block.TRAILERS}  # fmt: skip
_CLIENT_PREFACE_LENGTH = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class HboneConnection:
    """One HBONE HTTP/2 connection, client or server side, without I/O."""

    # False: every frame goes through h2 (the reference the fast path is tested against).
    fast_data = True

    def __init__(self, side: Side, settings: HboneSettings | None = None) -> None:
        self.side = side
        self.settings = settings or HboneSettings()
        config = h2.config.H2Configuration(
            client_side=side is Side.CLIENT,
            header_encoding=None,
            validate_inbound_headers=False,  # checked in one pass by fields.check_block
            normalize_inbound_headers=False,
            validate_outbound_headers=False,  # ours come from typed values (messages.py)
            normalize_outbound_headers=False,
        )
        self._h2 = _h2compat.H2Connection(config=config)
        self._h2.encoder = PlainEncoder()
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
        # Inbound framing: bytes of incomplete frames (at most one frame plus a read),
        # the client preface still to pass to h2, and a fast-path DATA frame's payload
        # still to arrive. h2 is only ever given whole frames.
        self._inbuf = bytearray()
        self._head_checked = False  # the frame at the start of _inbuf passed the guard
        self._preface_left = _CLIENT_PREFACE_LENGTH if side is Side.SERVER else 0
        self._data_left = 0
        self._data_stream = 0
        # Outbound: bytes ready for the wire, in order (h2's output, our DATA frames).
        self._wire: list[bytes | memoryview] = []
        self._outbound: dict[int, _Outbound] = {}
        self._open: set[int] = set()  # streams not yet fully closed or reset
        self._remote_ended: set[int] = set()  # the peer sent END_STREAM
        self._unanswered: set[int] = set()  # server side: CONNECTs not yet answered
        self._guard = FloodGuard(
            self.settings.limits,
            self.settings.max_header_list_size,
            max_frame_size=self.settings.max_frame_size,
        )
        # Bytes h2 queued on its own in answer to what it read (PING and SETTINGS ACKs,
        # RST_STREAM for frames on closed streams), so far: replies the peer owes reading.
        self.reply_bytes = 0
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
        pending = self._h2.data_to_send()
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
        pending = self._h2.data_to_send()
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
        headers = [
            hpack.NeverIndexedHeaderTuple(name, value) if name in UNINDEXED else (name, value)
            for name, value in request.to_headers()
        ]
        self._h2.send_headers(stream_id, headers, end_stream=False)
        self._open.add(stream_id)
        self._outbound[stream_id] = _Outbound(deque())
        return stream_id

    # -- server side -----------------------------------------------------------------

    def respond(self, stream_id: int, status: int) -> None:
        """Answer a CONNECT: 200 opens the tunnel, anything else ends the stream."""
        assert self.side is Side.SERVER, "only servers respond"
        if stream_id not in self._open:
            return
        self._unanswered.discard(stream_id)
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

    def receive_data(self, data: bytes | memoryview) -> list[ev.Event]:
        """Feed bytes from the wire (kept parts copied); what happened. Never raises."""
        if self.failed is not None:
            return []
        out: list[ev.Event] = []
        try:
            self._receive(data, out)
        except Abuse as exc:  # also a frame over our maximum size, refused on its header
            out.append(self._fail(str(exc), exc.error_code))
        except BadBlock as exc:
            out.append(self._fail(f"HTTP/2 protocol error: {exc}", 1))
        except h2.exceptions.ProtocolError as exc:
            out.append(self._fail(f"HTTP/2 protocol error: {exc}", exc.error_code))
        except Exception as exc:  # hostile input must never escape as a crash
            out.append(self._fail(f"malformed HTTP/2 input: {type(exc).__name__}: {exc}", 1))
        return ev.without_stillborn(out) if self.side is Side.SERVER else out

    def _receive(self, data: bytes | memoryview, out: list[ev.Event]) -> None:
        """Split the input into frames: fast-path DATA payloads become events here,
        runs of other frames go to h2 whole and in order."""
        if self._data_left:  # the rest of a fast-path DATA frame's payload
            take = min(self._data_left, len(data))
            self._deliver(self._data_stream, bytes(data[:take]), out)
            self._data_left -= take
            if take == len(data):
                return
            data = data[take:]
        # Parse the read itself unless an incomplete frame is pending: one copy fewer.
        buf: bytes | bytearray | memoryview
        if self._inbuf:
            self._inbuf += data
            buf = self._inbuf
        else:
            buf = data
        size = len(buf)
        pos = given = 0  # given: bytes before it have been handled (by h2 or here)
        if self._preface_left:  # server side: the client preface goes to h2 as is
            pos = min(self._preface_left, size)
            self._preface_left -= pos
        checked = self._head_checked and buf is self._inbuf  # the first frame's header was
        self._head_checked = False
        while size - pos >= _FRAME_HEADER:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if checked:
                checked = False
            else:  # budgets, once per frame, on its header (before its payload is buffered)
                ftype = buf[pos + 3]
                self._guard.frame(ftype, buf[pos + 4], length)
                if ftype == RST_STREAM and self.side is Side.SERVER:
                    self._check_early_reset(int.from_bytes(buf[pos + 5 : pos + 9], "big"))
            if buf[pos + 3] == _DATA and not buf[pos + 4] & _END_STREAM_OR_PADDED:
                if given < pos:  # let h2 see everything before this frame first
                    self._to_h2(bytes(buf[given:pos]), out)
                    given = pos
                    if self.failed is not None:
                        break
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                if self._take_data(stream_id, length):
                    start = pos + _FRAME_HEADER
                    have = min(length, size - start)
                    if have:
                        self._deliver(stream_id, bytes(buf[start : start + have]), out)
                    pos = given = start + have
                    if have < length:
                        self._data_left, self._data_stream = length - have, stream_id
                        break
                    continue
            if size - pos - _FRAME_HEADER < length:
                self._head_checked = True
                break  # incomplete: wait for the rest
            pos += _FRAME_HEADER + length
        if given < pos and self.failed is None:
            self._to_h2(bytes(buf[given:pos]), out)
        if buf is self._inbuf:
            del self._inbuf[:pos]
        elif pos < size:
            self._inbuf = bytearray(buf[pos:])

    def _check_early_reset(self, stream_id: int) -> None:
        """An RST_STREAM is about to be read: is it for a CONNECT not answered yet (or
        not even seen yet, further on in this read)?"""
        stream_id &= 0x7FFFFFFF
        if stream_id in self._unanswered or stream_id > self._h2.highest_inbound_stream_id:
            self._guard.early_reset()

    def _to_h2(self, frames: bytes, out: list[ev.Event]) -> None:
        before = len(self._h2._data_to_send)
        events = self._h2.receive_data(frames)
        self.reply_bytes += len(self._h2._data_to_send) - before
        for event in events:
            self._translate(event, out)

    def _take_data(self, stream_id: int, length: int) -> bool:
        """Whether this DATA frame takes the fast path; if so its length is charged
        to h2's windows (raising FlowControlError if it overruns one)."""
        h2conn = self._h2
        if (
            not self.fast_data
            or stream_id not in self._open
            or h2conn.state_machine.state not in _OPEN_CONNECTION
            or h2conn.incoming_buffer._headers_buffer  # inside a header block: h2 objects
        ):
            return False
        stream = h2conn.streams.get(stream_id)
        if (
            stream is None
            or stream.state_machine.state not in _RECEIVING
            or stream._expected_content_length is not None
        ):
            return False
        h2conn._inbound_flow_control_window_manager.window_consumed(length)
        stream._inbound_window_manager.window_consumed(length)
        return True

    def _deliver(self, stream_id: int, payload: bytes, out: list[ev.Event]) -> None:
        if stream_id in self._open:
            out.append(ev.DataReceived(stream_id, payload))
        else:  # reset meanwhile: nobody will consume it, so return the credit now
            self.consumed(stream_id, len(payload))

    def _fail(self, reason: str, error_code: int | None) -> ev.ConnectionFailed:
        self.failed = reason
        self.close(int(error_code or h2.errors.ErrorCodes.PROTOCOL_ERROR), reason)
        return ev.ConnectionFailed(reason)

    def _translate(self, event: h2.events.Event, out: list[ev.Event]) -> None:
        block = _BLOCKS.get(type(event))
        if block is not None:  # a malformed block is a connection error, as with h2's checks
            check_block(event.headers, block)  # type: ignore[attr-defined]
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
        # Other events (SettingsAcknowledged, PingReceived - h2 answers it -, PriorityUpdated,
        # UnknownFrameReceived, informational responses) need nothing.

    def _on_request(self, event: h2.events.RequestReceived, out: list[ev.Event]) -> None:
        stream_id = event.stream_id
        if self.side is not Side.SERVER:
            return
        self._open.add(stream_id)
        self._unanswered.add(stream_id)
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
                if last or not self._send_data_frame(stream_id, chunk):
                    h2conn.send_data(
                        stream_id, chunk, end_stream=last
                    )  # FIN rides on the last DATA
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

    def _send_data_frame(self, stream_id: int, chunk: memoryview) -> bool:
        """The DATA fast path: serialise the frame here if h2 would send it plainly.

        The caller has sized ``chunk`` within the window and maximum frame size."""
        h2conn = self._h2
        stream = h2conn.streams.get(stream_id)
        if (
            not self.fast_data
            or stream is None
            or stream.state_machine.state not in _SENDING
            or h2conn.state_machine.state not in _OPEN_CONNECTION
        ):
            return False
        earlier = h2conn.data_to_send()
        if earlier:
            self._wire.append(earlier)
        size = len(chunk)
        header = size.to_bytes(3, "big") + b"\x00\x00" + stream_id.to_bytes(4, "big")
        if size < _TLS_RECORD:
            self._wire += (header, chunk)
        else:  # the header rides in a full first record; the rest goes uncopied
            first = _TLS_RECORD - _FRAME_HEADER
            self._wire += (header + chunk[:first], chunk[first:])
        h2conn.outbound_flow_control_window -= size
        stream.outbound_flow_control_window -= size
        return True

    def _maybe_closed(self, stream_id: int) -> None:
        """Forget a stream once both directions ended (by our own account, not h2's state:
        an RST_STREAM read in the same chunk as END_STREAM must still be reported)."""
        out = self._outbound.get(stream_id)
        local_done = out is None or out.eof_sent
        if stream_id in self._remote_ended and local_done:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        self._open.discard(stream_id)
        self._unanswered.discard(stream_id)
        self._remote_ended.discard(stream_id)
        self._outbound.pop(stream_id, None)
