"""A lean HTTP/2 server codec (sans-io) for the waypoint's downstream h2c, in place of h2.

h2 spent about a quarter of a unary gRPC call's CPU at the waypoint on the
downstream side (frame objects, per-frame events, header validation as
chained generators). This codec does what a server of requests needs, with
h2's strictness (a request h2 refuses is refused here too; the tests hold
both to the same inputs):

- Inbound: the client preface, then every frame type checked as RFC 9113
  asks (sizes, stream ids, padding, flow-control windows, SETTINGS values,
  CONTINUATION sequences, PUSH_PROMISE refused). Each frame header is first
  given to the connection's ``FloodGuard`` (``hbone.guard``), so a flood is
  refused before any of it is parsed. Header blocks are decoded with the
  ``hpack`` package (dynamic table, Huffman) under the advertised header list
  size, and requests are validated as RFC 9113 section 8 says: lower-case
  token names, no connection-specific fields, ``te`` only ``trailers``, no
  NUL/CR/LF nor surrounding whitespace in values, pseudo-headers first, once
  each and only the request ones, ``:method``, ``:scheme`` and a non-empty
  ``:path`` (ordinary CONNECT: neither, extended CONNECT: both), ``:authority``
  or ``host`` (equal when both), one ``host`` at most, no pseudo-headers in
  trailers, and a ``content-length`` that the DATA must match.
- Errors: as Envoy's default (and h2's), a malformed request or a protocol
  violation on any stream is a connection error: GOAWAY with the code, nothing
  more is read, and :meth:`H2Server.receive_data` reports
  :class:`~ambient.waypoint.proxy.h2events.ConnectionLost`; it never raises.
  Frames for streams already closed are answered RST_STREAM(STREAM_CLOSED), as
  h2 does; a stream beyond ``max_streams`` concurrent ones is refused with
  RST_STREAM(REFUSED_STREAM) (RFC 9113 5.1.2).
- Outbound: our SETTINGS and connection window first; HEADERS as HPACK
  without a dynamic table nor Huffman (``hpackmemo.encode_fields``; a table
  size update to 0 after the client lowers its table size), split into
  CONTINUATION above the client's frame size; DATA within the windows;
  WINDOW_UPDATE once half a window was consumed; PING and SETTINGS ACKs;
  RST_STREAM; GOAWAY.

A stream's state is only what a server needs: open, half-closed on either side,
closed (forgotten once both sides ended, or reset).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import hpack.exceptions

from ambient.hbone.guard import Abuse, FloodGuard
from ambient.waypoint.proxy.h2events import (
    ConnectionLost,
    DataReceived,
    GoAway,
    HeadersReceived,
    StreamReset,
    WindowOpened,
)
from ambient.waypoint.proxy.h2fields import FieldError, check_regular, content_length, request
from ambient.waypoint.proxy.hpackmemo import MemoDecoder, encode_fields

__all__ = ["H2Server", "RequestReceived", "ServerEvent", "StreamGone"]

Fields = tuple[tuple[str, str], ...]
_T = TypeVar("_T")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 8

MAX_WINDOW = 2**31 - 1
FRAME_SIZE = 16384  # what we accept (we never advertise more)
_HEADER = struct.Struct(">IBI")  # (24-bit length << 8 | type), flags, stream id: 9 bytes


@dataclass(slots=True)
class RequestReceived:
    """A request head: its pseudo-header fields and its regular fields, in order."""

    stream_id: int
    pseudo: dict[str, str]
    headers: tuple[tuple[str, str], ...]
    end_stream: bool


ServerEvent = (
    RequestReceived | DataReceived | HeadersReceived | StreamReset | WindowOpened | GoAway
    | ConnectionLost
)  # fmt: skip


class StreamGone(Exception):
    """Sending on a stream that is closed (reset, or our side already ended)."""


class _Error(Exception):
    def __init__(self, code: int, reason: str, stream_id: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.stream_id = stream_id  # 0: a connection error


class _Stream:
    __slots__ = ("consumed", "expected", "local_closed", "received", "recv_window",
                 "remote_closed", "send_window")  # fmt: skip

    def __init__(self, send_window: int, recv_window: int, expected: int | None) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.consumed = 0  # received and taken by the consumer, not yet granted back
        self.expected = expected  # content-length, if the request declared one
        self.received = 0
        self.remote_closed = False
        self.local_closed = False


class H2Server:
    """One server connection's protocol state (sans-io)."""

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        max_streams: int,
        max_header_list: int,
        guard: FloodGuard | None = None,
    ) -> None:
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_streams = max_streams
        self.max_header_list = max_header_list
        self.guard = guard
        self.dead = False
        self.frame_size = FRAME_SIZE  # the client's SETTINGS_MAX_FRAME_SIZE
        self._out = bytearray()
        self._in = b""
        self._preface = len(PREFACE)  # preface bytes still expected
        self._settings_seen = False
        self._streams: dict[int, _Stream] = {}
        self._highest = 0  # the highest stream id the client opened
        self._send_window = 65535
        self._recv_window = 65535
        self._recv_consumed = 0
        self._peer_initial_window = 65535
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION
        self._block_stream = 0
        self._block_end = False
        self._decoder = MemoDecoder(max_header_list)
        self._table_update = False
        self._last_head: tuple[Fields, dict[str, str], Fields, int | None] | None = None

    def initiate(self) -> None:
        """Our SETTINGS and the connection window: call once, first."""
        settings = struct.pack(
            ">HIHIHIHI",
            SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window,
            SETTINGS_MAX_CONCURRENT_STREAMS, self.max_streams,
            SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list,
            SETTINGS_ENABLE_CONNECT_PROTOCOL, 1,
        )  # fmt: skip
        self._frame(SETTINGS, 0, 0, settings)
        if self.connection_window > 65535:
            increment = self.connection_window - 65535
            self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", increment))
            self._recv_window = self.connection_window

    def describe(self) -> dict[str, object]:
        """Windows (ours to send, the client's to send) of the connection and each stream."""
        return {
            "windows": [self._send_window, self._recv_window],
            "streams": {i: [s.send_window, s.recv_window] for i, s in self._streams.items()},
        }

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # -- sending -------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self._out += _HEADER.pack((len(payload) << 8) | kind, flags, stream_id)
        self._out += payload

    def _sendable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed or self.dead:
            raise StreamGone(f"HTTP/2 stream {stream_id} is closed")
        return stream

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> None:
        """A response head or trailers (``end``); the fields come validated."""
        self._sendable(stream_id)
        block = encode_fields(headers)
        if self._table_update:  # the client lowered its table size: ours is (and stays) 0
            block = b"\x20" + block
            self._table_update = False
        size = self.frame_size
        flags = END_STREAM if end else 0
        if len(block) <= size:
            self._frame(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            self._frame(HEADERS, flags, stream_id, block[:size])
            for start in range(size, len(block), size):
                last = start + size >= len(block)
                chunk = block[start : start + size]
                self._frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk)
        if end:
            self._close_local(stream_id)

    def window(self, stream_id: int) -> int:
        """How many DATA bytes may be sent on ``stream_id`` now; raises :class:`StreamGone`."""
        stream = self._sendable(stream_id)
        return max(0, min(self._send_window, stream.send_window))

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """DATA within :meth:`window` (the caller checks), split at the frame size."""
        stream = self._sendable(stream_id)
        size = self.frame_size
        self._send_window -= len(data)
        stream.send_window -= len(data)
        if len(data) <= size:
            self._frame(DATA, END_STREAM if end else 0, stream_id, data)
        else:
            view = memoryview(data)
            for start in range(0, len(data), size):
                last = start + size >= len(data)
                self._frame(DATA, END_STREAM if end and last else 0, stream_id,
                            bytes(view[start : start + size]))  # fmt: skip
        if end:
            self._close_local(stream_id)

    def end_stream(self, stream_id: int) -> None:
        self._sendable(stream_id)
        self._frame(DATA, END_STREAM, stream_id)
        self._close_local(stream_id)

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """RST_STREAM; the stream is forgotten (nothing if it already was)."""
        if self._streams.pop(stream_id, None) is not None and not self.dead:
            self._frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))

    def _grant_connection(self, size: int) -> None:
        self._recv_consumed += size
        if self._recv_consumed >= self.connection_window // 2:
            self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._recv_consumed))
            self._recv_window += self._recv_consumed
            self._recv_consumed = 0

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The consumer took ``size`` flow-controlled bytes: grant them back in halves."""
        if not size or self.dead:
            return
        self._grant_connection(size)
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return
        stream.consumed += size
        if stream.consumed >= self.stream_window // 2:
            self._frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.consumed))
            stream.recv_window += stream.consumed
            stream.consumed = 0

    def close(self, code: int = NO_ERROR, reason: bytes = b"") -> None:
        """GOAWAY naming the last stream we took; nothing more is read."""
        if not self.dead:
            self._frame(GOAWAY, 0, 0, struct.pack(">II", self._highest, code) + reason)
            self.dead = True

    def _close_local(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.local_closed = True
            if stream.remote_closed:
                del self._streams[stream_id]

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Feed bytes read from the client; the events they complete (never raises)."""
        if self.dead:
            return []
        events: list[ServerEvent] = []
        buffer = self._in + data if self._in else data
        offset = 0
        guard = self.guard
        try:
            if self._preface:
                take = min(self._preface, len(buffer))
                start = len(PREFACE) - self._preface
                if buffer[:take] != PREFACE[start : start + take]:
                    raise _Error(PROTOCOL_ERROR, "not the HTTP/2 client preface")
                self._preface -= take
                offset = take
            while len(buffer) - offset >= 9:
                word, flags, stream_id = _HEADER.unpack_from(buffer, offset)
                length, kind = word >> 8, word & 0xFF
                stream_id &= MAX_WINDOW
                if guard is not None:
                    guard.frame(kind, flags, length)
                if length > FRAME_SIZE:
                    raise _Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if len(buffer) - offset - 9 < length:
                    break
                payload = buffer[offset + 9 : offset + 9 + length]
                offset += 9 + length
                if not self._settings_seen:
                    if kind != SETTINGS or flags & ACK:
                        raise _Error(PROTOCOL_ERROR, "the preface is not followed by SETTINGS")
                    self._settings_seen = True
                try:
                    self._on_frame(kind, flags, stream_id, payload, events)
                except _Error as exc:
                    if not exc.stream_id:
                        raise
                    if exc.stream_id in self._streams:
                        events.append(StreamReset(exc.stream_id, exc.code, local=True))
                    self.reset(exc.stream_id, exc.code)
        except _Error as exc:
            return self._lost(events, exc.code, str(exc))
        except Abuse as exc:
            return self._lost(events, exc.error_code, str(exc))
        self._in = buffer[offset:]
        return events

    def _lost(self, events: list[ServerEvent], code: int, reason: str) -> list[ServerEvent]:
        self.close(code, reason.encode()[:256])
        self._in = b""
        events.append(ConnectionLost(code, reason))
        return events

    def _on_frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[ServerEvent]
    ) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise _Error(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._on_data(flags, stream_id, payload, events)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id, payload, events)
        elif kind == CONTINUATION:
            self._on_continuation(flags, stream_id, payload, events)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload, events)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload, events)
        else:
            self._on_other(kind, flags, stream_id, payload, events)

    def _on_other(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[ServerEvent]
    ) -> None:
        """RST_STREAM, PING, GOAWAY, PUSH_PROMISE, PRIORITY and unknown types."""
        if kind == RST_STREAM:
            if stream_id == 0:
                raise _Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise _Error(FRAME_SIZE_ERROR, "RST_STREAM of a bad size")
            self._check_opened(stream_id)
            if self._streams.pop(stream_id, None) is not None:
                events.append(StreamReset(stream_id, struct.unpack(">I", payload)[0]))
        elif kind == PING:
            if stream_id != 0:
                raise _Error(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise _Error(FRAME_SIZE_ERROR, "PING of a bad size")
            if not flags & ACK:
                self._frame(PING, ACK, 0, payload)
        elif kind == GOAWAY:
            if stream_id != 0:
                raise _Error(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _Error(FRAME_SIZE_ERROR, "GOAWAY of a bad size")
            last, code = struct.unpack_from(">II", payload)
            events.append(GoAway(last & MAX_WINDOW, code))
        elif kind == PUSH_PROMISE:
            raise _Error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        elif kind == PRIORITY:
            if stream_id == 0:
                raise _Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise _Error(FRAME_SIZE_ERROR, "PRIORITY of a bad size", stream_id)
            if int.from_bytes(payload[:4], "big") & MAX_WINDOW == stream_id:
                raise _Error(PROTOCOL_ERROR, "a stream depending on itself", stream_id)
        # unknown frame types are ignored (RFC 9113 4.1)

    def _check_opened(self, stream_id: int) -> None:
        """A frame other than HEADERS/PRIORITY may only name a stream the client opened."""
        if stream_id % 2 == 0 or stream_id > self._highest:
            raise _Error(PROTOCOL_ERROR, f"frame on stream {stream_id}, which is idle")

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _Error(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_data(
        self, flags: int, stream_id: int, payload: bytes, events: list[ServerEvent]
    ) -> None:
        if stream_id == 0:
            raise _Error(PROTOCOL_ERROR, "DATA on stream 0")
        self._check_opened(stream_id)
        flow = len(payload)
        if flow > self._recv_window:
            raise _Error(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_window -= flow
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:  # closed: only the connection's credit
            self._grant_connection(flow)
            if stream is not None:
                raise _Error(STREAM_CLOSED, "DATA after the end of the stream", stream_id)
            return  # a stream we reset or finished: what was in flight is dropped
        if flow > stream.recv_window:
            raise _Error(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= flow
        data = self._unpad(flags, payload)
        stream.received += len(data)
        end = bool(flags & END_STREAM)
        if stream.expected is not None and (
            stream.received > stream.expected or (end and stream.received != stream.expected)
        ):
            raise _Error(PROTOCOL_ERROR, "a body that does not match its content-length")
        if end:
            self._close_remote(stream_id, stream)
        events.append(DataReceived(stream_id, data, flow, end))

    def _on_headers(
        self, flags: int, stream_id: int, payload: bytes, events: list[ServerEvent]
    ) -> None:
        if stream_id == 0:
            raise _Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        if stream_id % 2 == 0:
            raise _Error(PROTOCOL_ERROR, f"HEADERS on even stream {stream_id}")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise _Error(PROTOCOL_ERROR, "HEADERS priority fields missing")
            if int.from_bytes(block[:4], "big") & MAX_WINDOW == stream_id:
                raise _Error(PROTOCOL_ERROR, "a stream depending on itself")
            block = block[5:]
        if flags & END_HEADERS:
            self._on_block(stream_id, bytes(block), bool(flags & END_STREAM), events)
        else:
            self._block, self._block_stream = bytearray(block), stream_id
            self._block_end = bool(flags & END_STREAM)

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[ServerEvent]
    ) -> None:
        if self._block is None or stream_id != self._block_stream:
            raise _Error(PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block += payload
        if len(self._block) > self.max_header_list + 16384:  # the guard refuses it first
            raise _Error(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            block, self._block = bytes(self._block), None
            self._on_block(stream_id, block, self._block_end, events)

    def _on_block(self, stream_id: int, block: bytes, end: bool, events: list[ServerEvent]) -> None:
        try:  # decoded even for a stream we refuse: the decoder's table must stay in step
            fields = self._decoder.decode(block)
        except hpack.exceptions.OversizedHeaderListError:
            raise _Error(PROTOCOL_ERROR, "header list larger than we allow") from None
        except (hpack.exceptions.HPACKError, ValueError, IndexError) as exc:
            raise _Error(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream_id <= self._highest:  # trailers, or a stream already closed
            if stream is None:
                return  # a stream we reset or finished: trailers in flight are dropped
            if stream.remote_closed:
                raise _Error(STREAM_CLOSED, "HEADERS after the end of the stream", stream_id)
            if not end:
                raise _Error(PROTOCOL_ERROR, "trailers without END_STREAM")
            _fields(check_regular, fields)
            if stream.expected is not None and stream.received != stream.expected:
                raise _Error(PROTOCOL_ERROR, "a body that does not match its content-length")
            self._close_remote(stream_id, stream)
            events.append(HeadersReceived(stream_id, 0, fields, True, trailers=True))
            return
        self._highest = stream_id
        pseudo, regular, expected = self._validated(fields)
        if len(self._streams) >= self.max_streams:
            self._frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM))
            return
        if end and expected:
            raise _Error(PROTOCOL_ERROR, "a body that does not match its content-length")
        stream = _Stream(self._peer_initial_window, self.stream_window, expected)
        self._streams[stream_id] = stream
        if end:
            stream.remote_closed = True
        events.append(RequestReceived(stream_id, pseudo, regular, end))

    def _validated(self, fields: Fields) -> tuple[dict[str, str], Fields, int | None]:
        """The request head's parts, checked; a repeated head (the decoder hands back the
        same tuple for a repeated block) is checked once."""
        last = self._last_head
        if last is not None and last[0] is fields:
            return dict(last[1]), last[2], last[3]
        pseudo, regular = _fields(request, fields)
        expected = _fields(content_length, regular)
        self._last_head = (fields, pseudo, regular, expected)
        return dict(pseudo), regular, expected

    def _close_remote(self, stream_id: int, stream: _Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._streams.pop(stream_id, None)

    def _on_settings(
        self, flags: int, stream_id: int, payload: bytes, events: list[ServerEvent]
    ) -> None:
        if stream_id != 0:
            raise _Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise _Error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise _Error(FRAME_SIZE_ERROR, "SETTINGS of a bad size")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _Error(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise _Error(FLOW_CONTROL_ERROR, "a stream window overflowed")
                events.append(WindowOpened(0))
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not FRAME_SIZE <= value <= 2**24 - 1:
                    raise _Error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.frame_size = value
            elif key == SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True  # RFC 7541 4.2: acknowledged in the next block
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise _Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif key == SETTINGS_ENABLE_CONNECT_PROTOCOL and value > 1:
                raise _Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1")
        self._frame(SETTINGS, ACK, 0)

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[ServerEvent]) -> None:
        if len(payload) != 4:
            raise _Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a bad size")
        increment = struct.unpack(">I", payload)[0] & MAX_WINDOW
        if stream_id == 0:
            if not increment:
                raise _Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _Error(FLOW_CONTROL_ERROR, "connection window overflow")
            events.append(WindowOpened(0))
            return
        self._check_opened(stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a closed stream: WINDOW_UPDATE may still arrive (RFC 9113 6.9)
        if not increment:
            raise _Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on a stream")
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise _Error(FLOW_CONTROL_ERROR, "stream window overflow")
        events.append(WindowOpened(stream_id))


def _fields(check: Callable[[Fields], _T], fields: Fields) -> _T:
    """A ``h2fields`` check; a malformed head is a connection error (PROTOCOL_ERROR)."""
    try:
        return check(fields)
    except FieldError as exc:
        raise _Error(PROTOCOL_ERROR, str(exc)) from None
