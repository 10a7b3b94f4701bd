"""A lean HTTP/2 client codec (sans-io) for the waypoint's upstream connections, in place of h2.

The h2 package spends most of an upstream gRPC call in header validation,
HPACK table searches and per-frame objects (about 250 µs of the waypoint's
~600 µs per call). This codec does only what a client of one origin needs,
with the same strictness where it matters:

- Outbound: the preface and our SETTINGS (no push, ``stream_window`` per
  stream, ``connection_window`` for the connection), HEADERS (split into
  CONTINUATION above the server's maximum frame size), DATA within the
  windows, RST_STREAM, WINDOW_UPDATE once half a window was consumed, PING and
  SETTINGS acknowledgements, GOAWAY. Header blocks are HPACK without a
  dynamic table and without Huffman coding (indexed static entries, else
  literals without indexing; a dynamic table size update to 0 after the
  server changes its table size): valid for any decoder, no state to keep,
  and cheap; the bytes cost nothing inside a local HBONE tunnel. Header fields
  come validated (``h1codec`` or the downstream HTTP/2 codec, or the
  configuration loader).
- Inbound: every frame type is checked as RFC 9113 asks (sizes, stream ids,
  padding, flow-control windows, SETTINGS values, CONTINUATION sequences,
  PUSH_PROMISE refused as we disable push), header blocks are decoded with
  the ``hpack`` package (dynamic table, Huffman) under a 64 KiB list limit,
  and responses are checked (lower-case token names, exactly one ``:status``
  first, no connection-specific fields, no controls in values; trailers
  without pseudo-headers). A connection error queues GOAWAY and reports
  :class:`ConnectionLost`; a malformed response resets its stream
  (PROTOCOL_ERROR) and reports :class:`StreamReset`. :meth:`H2Client.receive_data`
  never raises for bad input.

Events (``h2events``) are plain objects returned by ``receive_data``; ``data_to_send`` gives
the bytes to write.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import hpack.exceptions

from ambient.hbone.guard import Abuse, FloodGuard
from ambient.waypoint.proxy.h2events import (
    ConnectionLost,
    DataReceived,
    Event,
    GoAway,
    HeadersReceived,
    SettingsChanged,
    StreamReset,
    WindowOpened,
)
from ambient.waypoint.proxy.hpackmemo import MemoDecoder
from ambient.waypoint.proxy.hpackmemo import encode_fields as encode_headers

__all__ = [
    "CANCEL",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "H2Client",
    "encode_headers",
]

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

MAX_WINDOW = 2**31 - 1
FRAME_SIZE = 16384  # what we accept (we never advertise more)
MAX_HEADER_LIST = 64 * 1024
MAX_HEADER_BLOCK = MAX_HEADER_LIST + 16 * 1024  # compressed, CONTINUATIONs included
_HEADER = struct.Struct(">IBI")  # (24-bit length << 8 | type), flags, stream id: 9 bytes
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")


class _Error(Exception):
    def __init__(self, code: int, reason: str, stream_id: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.stream_id = stream_id  # 0: a connection error


@dataclass(slots=True)
class _Stream:
    send_window: int
    recv_window: int
    consumed: int = 0  # received and acknowledged by the consumer, not yet granted back
    head: bool = False  # a final response head arrived
    remote_closed: bool = False
    local_closed: bool = False


# -- the connection --------------------------------------------------------------------------


@dataclass
class H2Client:
    """One client connection's protocol state (sans-io)."""

    stream_window: int
    connection_window: int
    _out: bytearray = field(default_factory=bytearray)
    _in: bytes = b""
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _next_id: int = 1
    _send_window: int = 65535
    _recv_window: int = 65535
    _recv_consumed: int = 0
    _peer_initial_window: int = 65535
    _peer_frame_size: int = FRAME_SIZE
    max_concurrent_streams: int = 100  # until the server's SETTINGS say otherwise
    _block: bytearray | None = None  # a header block awaiting CONTINUATION
    _block_stream: int = 0
    _block_end: bool = False
    _decoder: MemoDecoder = field(default_factory=lambda: MemoDecoder(MAX_HEADER_LIST))
    dead: bool = False
    _table_update: bool = False
    guard: FloodGuard | None = None  # the upstream gets our servers' budgets (hbone.guard)

    def initiate(self) -> None:
        """The preface, our SETTINGS and the connection window: call once, first."""
        settings = struct.pack(
            ">HIHIHIHI",
            SETTINGS_ENABLE_PUSH, 0,
            SETTINGS_MAX_CONCURRENT_STREAMS, 0,
            SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window,
            SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST,
        )  # fmt: skip
        self._out += PREFACE
        self._frame(SETTINGS, 0, 0, settings)
        if self.connection_window > 65535:
            increment = self.connection_window - 65535
            self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", increment))
            self._recv_window = self.connection_window

    def describe(self) -> dict[str, object]:
        """Windows (ours to send, the server's to send) of the connection and each stream."""
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

    def open_stream(self) -> int:
        stream_id = self._next_id
        self._next_id += 2
        self._streams[stream_id] = _Stream(self._peer_initial_window, self.stream_window)
        return stream_id

    @property
    def streams_left(self) -> int:
        """Stream ids left on this connection (after that, a new connection is needed)."""
        return (MAX_WINDOW - self._next_id) // 2

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> None:
        block = encode_headers(headers)
        if self._table_update:  # the server changed its table size: ours is (and stays) 0
            block = b"\x20" + block
            self._table_update = False
        size = self._peer_frame_size
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
        """How many DATA bytes may be sent on ``stream_id`` now."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        return max(0, min(self._send_window, stream.send_window))

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """DATA within :meth:`window` (the caller checks), split at the frame size."""
        stream = self._streams[stream_id]
        size = self._peer_frame_size
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
        self._frame(DATA, END_STREAM, stream_id)
        self._close_local(stream_id)

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        if stream_id in self._streams:
            self._frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))
            del self._streams[stream_id]

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

    def forget(self, stream_id: int) -> None:
        """Drop a finished stream's state (both directions over, or reset)."""
        self._streams.pop(stream_id, None)

    def close(self, code: int = NO_ERROR) -> None:
        if not self.dead:
            last = max(0, self._next_id - 2)
            self._frame(GOAWAY, 0, 0, struct.pack(">II", last, code))
            self.dead = True

    def _close_local(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.local_closed = True
            if stream.remote_closed:
                del self._streams[stream_id]

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the server; the events they complete (never raises)."""
        if self.dead:
            return []
        events: list[Event] = []
        buffer = self._in + data if self._in else data
        offset = 0
        try:
            while len(buffer) - offset >= 9:
                word, flags, stream_id = _HEADER.unpack_from(buffer, offset)
                length, kind = word >> 8, word & 0xFF
                stream_id &= MAX_WINDOW
                if self.guard is not None:
                    self.guard.frame(kind, flags, length)
                if length > FRAME_SIZE:
                    raise _Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if len(buffer) - offset - 9 < length:
                    break
                payload = buffer[offset + 9 : offset + 9 + length]
                offset += 9 + length
                try:
                    self._on_frame(kind, flags, stream_id, payload, events)
                except _Error as exc:
                    if not exc.stream_id:
                        raise
                    self.reset(exc.stream_id, exc.code)
                    events.append(StreamReset(exc.stream_id, exc.code, local=True))
        except _Error as exc:
            self.close(exc.code)
            self._in = b""
            events.append(ConnectionLost(exc.code, str(exc)))
            return events
        except Abuse as exc:
            self.close(exc.error_code)
            self._in = b""
            events.append(ConnectionLost(exc.error_code, f"upstream abuse: {exc}"))
            return events
        self._in = buffer[offset:]
        return events

    def _on_frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise _Error(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._on_data(flags, stream_id, payload, events)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id, payload, events)
        elif kind == CONTINUATION:
            self._on_continuation(flags, stream_id, payload, events)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload, events)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload, events)
        elif kind == RST_STREAM:
            if stream_id == 0 or len(payload) != 4:
                raise _Error(PROTOCOL_ERROR if stream_id == 0 else FRAME_SIZE_ERROR, "RST_STREAM")
            self._check_known(stream_id)
            if self._streams.pop(stream_id, None) is not None:
                events.append(StreamReset(stream_id, struct.unpack(">I", payload)[0]))
        elif kind == PING:
            if stream_id != 0 or len(payload) != 8:
                raise _Error(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "bad PING")
            if not flags & ACK:
                self._frame(PING, ACK, 0, payload)
        elif kind == GOAWAY:
            if stream_id != 0 or len(payload) < 8:
                raise _Error(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "bad GOAWAY")
            last, code = struct.unpack_from(">II", payload)
            events.append(GoAway(last & MAX_WINDOW, code))
        elif kind == PUSH_PROMISE:
            raise _Error(PROTOCOL_ERROR, "PUSH_PROMISE while push is disabled")
        elif kind == PRIORITY:
            if stream_id == 0:
                raise _Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise _Error(FRAME_SIZE_ERROR, "PRIORITY of a bad size", stream_id)
        # unknown frame types are ignored (RFC 9113 4.1)

    def _check_known(self, stream_id: int) -> None:
        if stream_id % 2 == 0 or stream_id >= self._next_id:
            raise _Error(PROTOCOL_ERROR, f"frame on stream {stream_id}, which we never opened")

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _Error(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _Error(PROTOCOL_ERROR, "DATA on stream 0")
        self._check_known(stream_id)
        flow = len(payload)
        if flow > self._recv_window:
            raise _Error(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_window -= flow
        stream = self._streams.get(stream_id)
        if stream is None:  # a stream we reset or finished: only the connection's credit
            self._grant_connection(flow)
            return
        if not stream.head or stream.remote_closed:
            self._grant_connection(flow)
            raise _Error(PROTOCOL_ERROR, "DATA before a response head", stream_id)
        if flow > stream.recv_window:
            raise _Error(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= flow
        data = self._unpad(flags, payload)
        end = bool(flags & END_STREAM)
        if end:
            self._close_remote(stream_id, stream)
        events.append(DataReceived(stream_id, data, flow, end))

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise _Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        self._check_known(stream_id)
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise _Error(PROTOCOL_ERROR, "HEADERS priority fields missing")
            block = block[5:]
        if flags & END_HEADERS:
            self._on_block(stream_id, bytes(block), bool(flags & END_STREAM), events)
        else:
            self._block, self._block_stream = bytearray(block), stream_id
            self._block_end = bool(flags & END_STREAM)

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if self._block is None or stream_id != self._block_stream:
            raise _Error(PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block += payload
        if len(self._block) > MAX_HEADER_BLOCK:
            raise _Error(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            block, self._block = bytes(self._block), None
            self._on_block(stream_id, block, self._block_end, events)

    def _on_block(self, stream_id: int, block: bytes, end: bool, events: list[Event]) -> None:
        try:  # decoded even for a stream we dropped: the decoder's table must stay in step
            fields = list(self._decoder.decode(block))
        except (hpack.exceptions.HPACKError, ValueError, IndexError) as exc:
            raise _Error(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.remote_closed:
            raise _Error(STREAM_CLOSED, "HEADERS after the end of the stream", stream_id)
        if stream.head:  # trailers
            if not end:
                raise _Error(PROTOCOL_ERROR, "trailers without END_STREAM", stream_id)
            _check_fields(fields, stream_id)
            self._close_remote(stream_id, stream)
            events.append(HeadersReceived(stream_id, 0, tuple(fields), True, trailers=True))
            return
        status = _status(fields, stream_id)
        regular = tuple(fields[1:])
        _check_fields(list(regular), stream_id)
        if status < 200:
            if end:
                raise _Error(
                    PROTOCOL_ERROR, "an informational response ending the stream", stream_id
                )
            return  # 100 Continue and friends: the waypoint answered its client itself
        stream.head = True
        if end:
            self._close_remote(stream_id, stream)
        events.append(HeadersReceived(stream_id, status, regular, end))

    def _close_remote(self, stream_id: int, stream: _Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._streams.pop(stream_id, None)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
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
                events.append(WindowOpened(0))
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not FRAME_SIZE <= value <= 2**24 - 1:
                    raise _Error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_frame_size = value
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_concurrent_streams = value
                events.append(SettingsChanged(value))
            elif key == SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True  # RFC 7541 4.2: acknowledged in the next block
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise _Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
        self._frame(SETTINGS, ACK, 0)

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
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
        self._check_known(stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not increment:
            raise _Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0", stream_id)
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise _Error(FLOW_CONTROL_ERROR, "stream window overflow", stream_id)
        events.append(WindowOpened(stream_id))


def _status(fields: list[tuple[str, str]], stream_id: int) -> int:
    if not fields or fields[0][0] != ":status":
        raise _Error(PROTOCOL_ERROR, "a response without :status first", stream_id)
    value = fields[0][1]
    if len(value) != 3 or not value.isdigit() or not value.isascii():
        raise _Error(PROTOCOL_ERROR, f"bad :status {value!r}", stream_id)
    return int(value)


def _check_fields(fields: list[tuple[str, str]], stream_id: int) -> None:
    """Lower-case token names (so no pseudo-header), none connection-specific, no controls."""
    for name, value in fields:
        if not _NAME.fullmatch(name):
            raise _Error(PROTOCOL_ERROR, f"bad header name {name[:40]!r}", stream_id)
        if name in _CONNECTION_SPECIFIC:
            raise _Error(PROTOCOL_ERROR, f"connection-specific header {name!r}", stream_id)
        if _BAD_VALUE.search(value):
            raise _Error(PROTOCOL_ERROR, f"header {name!r} with a control character", stream_id)
