"""The HTTP/2 connection core (sans-io) that the waypoint's two codecs build on.

``h2server`` (downstream) and ``h2client`` (upstream) subclass
:class:`H2Connection`, which holds what both ends of a connection do alike
(RFC 9113):

- Outbound: the frame header and the queue of bytes to write (``_frame``,
  :meth:`~H2Connection.data_to_send`), our SETTINGS and the connection window
  first (``_initiate``), HEADERS split into CONTINUATION above the peer's frame
  size (a table size update to 0 first after the peer changed its table size:
  our encoder has no dynamic table), DATA split at the frame size within the
  windows, WINDOW_UPDATE once half a window was consumed
  (:meth:`~H2Connection.acknowledge`), PING and SETTINGS acknowledgements,
  GOAWAY naming the role's last stream.
- Inbound: the read loop (:meth:`~H2Connection.receive_data`, which never
  raises for bad input): each frame header is first given to the connection's
  ``FloodGuard`` (``http2.guard``), a frame longer than we accept is refused,
  and a connection error queues GOAWAY and reports ``ConnectionLost``. Checked
  here: SETTINGS (values, ACKs, the peer's initial window applied to every
  stream, its frame size, table size changes), WINDOW_UPDATE, RST_STREAM, PING,
  GOAWAY, PRIORITY's size, PUSH_PROMISE refused, padding, CONTINUATION
  sequences under ``max_header_list`` + 16 KiB, the connection's receive window;
  SETTINGS as the peer's first frame (RFC 9113 3.4: a server's connection
  preface is SETTINGS, a client's is the magic bytes then SETTINGS), a stream
  depending on itself (5.3.1), an initial window change that takes a stream's
  send window past 2^31-1 (6.9.2: a connection error for both roles).

A role decides the rest: which streams the peer may name (``_check_stream``,
``_check_headers``), what a header block means (``_on_block``), when a stream
may take DATA and what its body must be (``_check_data``, ``_on_body``), its
own settings (``_on_setting``) and GOAWAY's last stream (``_last_stream``). Two policies
differ by role and are class attributes: a server ends the connection for a
protocol violation on a stream (Envoy's default, as h2's server), a client
resets only the stream (``_violations_end_connection``: a broken upstream
response fails one request, as Envoy's upstream codec does); a server's GOAWAY
carries the reason as debug data (``_goaway_reason``). A stream error that
remains one (``H2Error.stream_id``) resets that stream (``_stream_error``).
"""

from __future__ import annotations

import struct
from types import FunctionType
from typing import Any, Generic, TypeVar, cast

from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    GoAway,
    H2Event,
    StreamReset,
    WindowOpened,
)
from ambient.http2.guard import Abuse, FloodGuard
from ambient.http2.hpackmemo import MemoDecoder, encode_fields

__all__ = ["H2Connection", "H2Error", "Stream"]

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
FRAME_SIZE = 16384  # RFC 9113's initial SETTINGS_MAX_FRAME_SIZE: what we accept by default
DEFAULT_WINDOW = 65535  # RFC 9113 6.9.2: every window's size until SETTINGS or WINDOW_UPDATE
_HEADER = struct.Struct(">IBI")  # (24-bit length << 8 | type), flags, stream id: 9 bytes

_E = TypeVar("_E")


class H2Error(Exception):
    """A protocol error found in the peer's frames: ``stream_id`` 0 is a connection error."""

    def __init__(self, code: int, reason: str, stream_id: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.stream_id = stream_id


class Stream:
    """A stream's windows and which sides ended, and the little each role adds (one class
    for both: the shared code then sees one type, see ``H2Connection.__init_subclass__``)."""

    __slots__ = ("consumed", "expected", "head", "local_closed", "received", "recv_window",
                 "remote_closed", "send_window")  # fmt: skip

    def __init__(self, send_window: int, recv_window: int, expected: int | None = None) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.consumed = 0  # received and taken by the consumer, not yet granted back
        self.remote_closed = False
        self.local_closed = False
        self.head = False  # a client's: a final response head arrived
        self.expected = expected  # a server's: the request's content-length, if declared
        self.received = 0  # a server's: request body bytes so far


class H2Connection(Generic[_E]):
    """One connection's frames and flow-control windows; ``_E``: the events its
    :meth:`receive_data` reports."""

    _violations_end_connection = False  # a protocol violation on a stream: GOAWAY, not RST
    _goaway_reason = False  # a connection error's reason goes out as GOAWAY's debug data
    _abuse_prefix = ""  # before a FloodGuard refusal in ConnectionLost's reason

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each role runs its own copy of the core's functions (the same code in new code
        objects), so that each call site sees one type.

        CPython (3.11+) specialises attribute and method lookups per bytecode instruction
        for the type it saw there. The waypoint runs a server and a client codec in one
        process, alternately on every call; code they shared flipped between the two types
        and ran unspecialised: about 30 % more CPU per exchange through both codecs than
        when each had its own (``bench/h2codec.py``)."""
        super().__init_subclass__(**kwargs)
        for name, value in vars(H2Connection).items():
            if next(k for k in cls.__mro__ if name in vars(k)) is not H2Connection:
                continue  # the role's own (or a parent role's copy, for a role's subclass)
            if isinstance(value, FunctionType):
                setattr(cls, name, _copy(value))
            elif isinstance(value, staticmethod) and isinstance(value.__func__, FunctionType):
                setattr(cls, name, staticmethod(_copy(value.__func__)))

    def __init__(
        self,
        stream_window: int,
        connection_window: int,
        max_header_list: int,
        guard: FloodGuard | None,
        *,
        expect_preface: bool = False,
        max_frame_size: int = FRAME_SIZE,
    ) -> None:
        """``expect_preface``: the peer is a client, whose connection preface starts with
        the magic bytes. Either peer's first frame must be SETTINGS (RFC 9113 3.4).
        ``max_frame_size``: the largest frame we accept; a role that accepts more than the
        default 16 KiB advertises it (SETTINGS_MAX_FRAME_SIZE) in its ``_initiate``."""
        if not FRAME_SIZE <= max_frame_size <= 2**24 - 1:
            raise ValueError(f"max_frame_size {max_frame_size} outside RFC 9113's range")
        self.max_frame_size = max_frame_size
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_header_list = max_header_list
        self.guard = guard
        self.dead = False
        self.frame_size = FRAME_SIZE  # the peer's SETTINGS_MAX_FRAME_SIZE
        self._out = bytearray()
        self._in = b""
        self._preface = len(PREFACE) if expect_preface else 0  # preface bytes still expected
        self._settings_seen = False
        self._streams: dict[int, Stream] = {}
        self._send_window = DEFAULT_WINDOW
        self._recv_window = DEFAULT_WINDOW
        self._recv_consumed = 0
        self._peer_initial_window = DEFAULT_WINDOW
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION
        self._block_stream = 0
        self._block_end = False
        self._decoder = MemoDecoder(max_header_list)
        self._table_update = False

    def _initiate(self, settings: list[tuple[int, int]]) -> None:
        """Our SETTINGS, then the connection window beyond the default."""
        self._frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in settings))
        if self.connection_window > DEFAULT_WINDOW:
            increment = self.connection_window - DEFAULT_WINDOW
            self._frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", increment))
            self._recv_window = self.connection_window

    def describe(self) -> dict[str, object]:
        """Windows (ours to send, the peer's to send) of the connection and each stream."""
        return {
            "windows": [self._send_window, self._recv_window],
            "streams": {i: [s.send_window, s.recv_window] for i, s in self._streams.items()},
        }

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    # -- sending -------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self._out += _HEADER.pack((len(payload) << 8) | kind, flags, stream_id)
        self._out += payload

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> None:
        """A head or trailers (``end``), the fields validated by the caller."""
        self._send_block(stream_id, encode_fields(headers), end)

    def _send_block(self, stream_id: int, block: bytes, end: bool) -> None:
        """An encoded header block, in HEADERS and (above the peer's frame size) CONTINUATION."""
        if self._table_update:  # the peer changed its table size: ours is (and stays) 0
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

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """DATA within :meth:`window` (the caller checks), split at the frame size."""
        self._send_data(self._streams[stream_id], stream_id, data, end)

    def _send_data(self, stream: Stream, stream_id: int, data: bytes, end: bool) -> None:
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
        self._frame(DATA, END_STREAM, stream_id)
        self._close_local(stream_id)

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

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """RST_STREAM; the stream is forgotten. Nothing is written for a stream already
        forgotten (it may be idle to the peer: RFC 9113 5.1) nor once the connection is
        closed or lost."""
        if self._streams.pop(stream_id, None) is not None and not self.dead:
            self._frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))

    def close(self, code: int = NO_ERROR, reason: bytes = b"") -> None:
        """GOAWAY naming the role's last stream; nothing more is read."""
        if not self.dead:
            self._frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream(), code) + reason)
            self.dead = True

    def _last_stream(self) -> int:
        raise NotImplementedError

    def _close_local(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.local_closed = True
            if stream.remote_closed:
                del self._streams[stream_id]

    def _close_remote(self, stream_id: int, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._streams.pop(stream_id, None)

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[_E]:
        """Feed bytes read from the peer; the events they complete (never raises)."""
        if self.dead:
            return []
        events: list[H2Event] = []
        buffer = self._in + data if self._in else data
        offset = 0
        guard = self.guard
        try:
            if self._preface:
                take = min(self._preface, len(buffer))
                start = len(PREFACE) - self._preface
                if buffer[:take] != PREFACE[start : start + take]:
                    raise H2Error(PROTOCOL_ERROR, "not the HTTP/2 client preface")
                self._preface -= take
                offset = take
            while len(buffer) - offset >= 9:
                word, flags, stream_id = _HEADER.unpack_from(buffer, offset)
                length, kind = word >> 8, word & 0xFF
                stream_id &= MAX_WINDOW
                if guard is not None:
                    guard.frame(kind, flags, length)
                if length > self.max_frame_size:
                    raise H2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if len(buffer) - offset - 9 < length:
                    break
                payload = buffer[offset + 9 : offset + 9 + length]
                offset += 9 + length
                if not self._settings_seen:
                    if kind != SETTINGS or flags & ACK:
                        raise H2Error(PROTOCOL_ERROR, "the first frame is not SETTINGS")
                    self._settings_seen = True
                try:
                    self._on_frame(kind, flags, stream_id, payload, events)
                except H2Error as exc:
                    if not exc.stream_id:
                        raise
                    self._stream_error(exc, events)
        except H2Error as exc:
            self._lost(events, exc.code, str(exc))
        except Abuse as exc:
            self._lost(events, exc.error_code, self._abuse_prefix + str(exc))
        else:
            self._in = buffer[offset:]
        return cast("list[_E]", events)  # a role reports only its own kinds of events

    def _lost(self, events: list[H2Event], code: int, reason: str) -> None:
        self.close(code, reason.encode()[:256] if self._goaway_reason else b"")
        self._in = b""
        events.append(ConnectionLost(code, reason))

    def _stream_error(self, exc: H2Error, events: list[H2Event]) -> None:
        """A stream error (``exc.stream_id``): reset that stream, and report it if it was
        one we knew (a PRIORITY may name any stream)."""
        if exc.stream_id in self._streams:
            events.append(StreamReset(exc.stream_id, exc.code, local=True))
        self.reset(exc.stream_id, exc.code)

    def _on_frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[H2Event]
    ) -> None:
        if self._block is not None and kind != CONTINUATION:
            raise H2Error(PROTOCOL_ERROR, "a header block was interrupted")
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

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        self._check_stream(stream_id)
        flow = len(payload)
        if flow > self._recv_window:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_window -= flow
        stream = self._streams.get(stream_id)
        if stream is None:  # a stream we reset or finished: only the connection's credit
            self._grant_connection(flow)
            return
        self._check_data(stream_id, stream, flow)
        if flow > stream.recv_window:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        stream.recv_window -= flow
        data = self._unpad(flags, payload)
        end = bool(flags & END_STREAM)
        self._on_body(stream, data, end)
        if end:
            self._close_remote(stream_id, stream)
        events.append(DataReceived(stream_id, data, flow, end))

    def _check_data(self, stream_id: int, stream: Stream, flow: int) -> None:
        """DATA on a stream that may not receive it (the role says which): its flow goes back
        to the connection, and the error."""
        raise NotImplementedError

    def _on_body(self, stream: Stream, data: bytes, end: bool) -> None:
        """A DATA frame's content, before it is reported (``end``: the last)."""

    def _on_headers(
        self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]
    ) -> None:
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        self._check_headers(stream_id)
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise H2Error(PROTOCOL_ERROR, "HEADERS priority fields missing")
            self._check_priority(stream_id, block)
            block = block[5:]
        if flags & END_HEADERS:
            self._on_block(stream_id, bytes(block), bool(flags & END_STREAM), events)
        else:
            self._block, self._block_stream = bytearray(block), stream_id
            self._block_end = bool(flags & END_STREAM)

    def _check_headers(self, stream_id: int) -> None:
        """Whether HEADERS may name ``stream_id`` (not 0)."""
        raise NotImplementedError

    def _check_priority(self, stream_id: int, priority: bytes) -> None:
        """HEADERS' priority fields (deprecated by RFC 9113): only that the stream does not
        depend on itself (5.3.1: a stream error; a server ends the connection)."""
        if _depends_on_itself(stream_id, priority):
            scope = 0 if self._violations_end_connection else stream_id
            raise H2Error(PROTOCOL_ERROR, "a stream depending on itself", scope)

    def _on_block(self, stream_id: int, block: bytes, end: bool, events: list[H2Event]) -> None:
        """A complete header block (HEADERS and its CONTINUATIONs)."""
        raise NotImplementedError

    def _check_stream(self, stream_id: int) -> None:
        """A frame other than HEADERS/PRIORITY may only name a stream the peer knows."""
        raise NotImplementedError

    def _on_other(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[H2Event]
    ) -> None:
        """RST_STREAM, PING, GOAWAY, PUSH_PROMISE, PRIORITY and unknown types."""
        if kind == RST_STREAM:
            if stream_id == 0:
                raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM of a bad size")
            self._check_stream(stream_id)
            if self._streams.pop(stream_id, None) is not None:
                events.append(StreamReset(stream_id, struct.unpack(">I", payload)[0]))
        elif kind == PING:
            if stream_id != 0:
                raise H2Error(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2Error(FRAME_SIZE_ERROR, "PING of a bad size")
            if not flags & ACK:
                self._frame(PING, ACK, 0, payload)
        elif kind == GOAWAY:
            if stream_id != 0:
                raise H2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2Error(FRAME_SIZE_ERROR, "GOAWAY of a bad size")
            last, code = struct.unpack_from(">II", payload)
            events.append(GoAway(last & MAX_WINDOW, code))
        elif kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "PUSH_PROMISE while push is disabled")
        elif kind == PRIORITY:
            if stream_id == 0:
                raise H2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise H2Error(FRAME_SIZE_ERROR, "PRIORITY of a bad size", stream_id)
            if _depends_on_itself(stream_id, payload):
                raise H2Error(PROTOCOL_ERROR, "a stream depending on itself", stream_id)
        # unknown frame types are ignored (RFC 9113 4.1)

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise H2Error(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]
    ) -> None:
        if self._block is None or stream_id != self._block_stream:
            raise H2Error(PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block += payload
        if len(self._block) > self.max_header_list + 16384:  # a guard refuses it first
            raise H2Error(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            block, self._block = bytes(self._block), None
            self._on_block(stream_id, block, self._block_end, events)

    def _on_settings(
        self, flags: int, stream_id: int, payload: bytes, events: list[H2Event]
    ) -> None:
        if stream_id != 0:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2Error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "SETTINGS of a bad size")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                self._initial_window(value, events)
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not FRAME_SIZE <= value <= 2**24 - 1:
                    raise H2Error(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.frame_size = value
            elif key == SETTINGS_HEADER_TABLE_SIZE:
                self._table_update = True  # RFC 7541 4.2: acknowledged in the next block
            elif key == SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise H2Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            else:
                self._on_setting(key, value, events)
        self._frame(SETTINGS, ACK, 0)

    def _initial_window(self, value: int, events: list[H2Event]) -> None:
        """The peer's SETTINGS_INITIAL_WINDOW_SIZE: every stream's send window moves by the
        change, and a change that takes one beyond the maximum is a connection error
        (RFC 9113 6.9.2)."""
        if value > MAX_WINDOW:
            raise H2Error(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE too large")
        delta = value - self._peer_initial_window
        streams = self._streams.values()
        if delta > 0 and any(s.send_window + delta > MAX_WINDOW for s in streams):
            raise H2Error(FLOW_CONTROL_ERROR, "a stream window overflowed")
        self._peer_initial_window = value
        for stream in streams:
            stream.send_window += delta
        events.append(WindowOpened(0))

    def _on_setting(self, key: int, value: int, events: list[H2Event]) -> None:
        """A setting the core does not handle (unknown ones are ignored: RFC 9113 6.5.2)."""

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[H2Event]) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a bad size")
        increment = struct.unpack(">I", payload)[0] & MAX_WINDOW
        if stream_id == 0:
            if not increment:
                raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window overflow")
            events.append(WindowOpened(0))
            return
        self._check_stream(stream_id)
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a closed stream: WINDOW_UPDATE may still arrive (RFC 9113 6.9)
        scope = 0 if self._violations_end_connection else stream_id
        if not increment:
            raise H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on a stream", scope)
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise H2Error(FLOW_CONTROL_ERROR, "stream window overflow", scope)
        events.append(WindowOpened(stream_id))


def _depends_on_itself(stream_id: int, priority: bytes) -> bool:
    """Priority fields (HEADERS' or PRIORITY's) naming their own stream as the parent."""
    return int.from_bytes(priority[:4], "big") & MAX_WINDOW == stream_id


def _copy(function: FunctionType) -> FunctionType:
    """``function`` with a code object of its own (its own specialisation caches)."""
    copy = FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    copy.__doc__ = function.__doc__
    copy.__annotations__ = function.__annotations__
    return copy
