"""A lean HTTP/2 server codec (sans-io) for the waypoint's downstream h2c, in place of h2.

h2 spent about a quarter of a unary gRPC call's CPU at the waypoint on the
downstream side (frame objects, per-frame events, header validation as
chained generators). This codec does what a server of requests needs, with
h2's strictness (a request h2 refuses is refused here too; the tests hold
both to the same inputs):

- Inbound: the client preface, then every frame type checked as RFC 9113
  asks (sizes, stream ids, padding, flow-control windows, SETTINGS values,
  CONTINUATION sequences, PUSH_PROMISE refused). Each frame header is first
  given to the connection's ``FloodGuard`` (``http2.guard``), so a flood is
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
  :class:`~ambient.http2.events.ConnectionLost`; it never raises.
  Frames for streams already closed are answered RST_STREAM(STREAM_CLOSED), as
  h2 does; a stream beyond ``max_streams`` concurrent ones is refused with
  RST_STREAM(REFUSED_STREAM) (RFC 9113 5.1.2).
- Outbound: our SETTINGS and connection window first; HEADERS as HPACK
  without a dynamic table nor Huffman (``http2.hpackmemo.encode_fields``; a table
  size update to 0 after the client lowers its table size), split into
  CONTINUATION above the client's frame size; DATA within the windows;
  WINDOW_UPDATE once half a window was consumed; PING and SETTINGS ACKs;
  RST_STREAM; GOAWAY.

A stream's state is only what a server needs: open, half-closed on either side,
closed (forgotten once both sides ended, or reset). The frames, windows and read
loop are ``http2.connection``'s (shared with the client codec); this module is what a
server adds: the client preface, streams the client opens, requests, and its
stricter policy (a violation on a stream ends the connection).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

import hpack.exceptions

from ambient.http2.connection import (
    COMPRESSION_ERROR,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS_ENABLE_CONNECT_PROTOCOL,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    H2Connection,
    H2Error,
    Stream,
)
from ambient.http2.events import (
    ConnectionLost,
    DataReceived,
    GoAway,
    H2Event,
    HeadersReceived,
    RequestReceived,
    StreamReset,
    WindowOpened,
)
from ambient.http2.guard import FloodGuard
from ambient.waypoint.proxy.h2fields import FieldError, check_regular, content_length, request

__all__ = [
    "INTERNAL_ERROR",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "H2Server",
    "RequestReceived",
    "ServerEvent",
    "StreamGone",
]

Fields = tuple[tuple[str, str], ...]
_T = TypeVar("_T")

ServerEvent = (
    RequestReceived | DataReceived | HeadersReceived | StreamReset | WindowOpened | GoAway
    | ConnectionLost
)  # fmt: skip


class StreamGone(Exception):
    """Sending on a stream that is closed (reset, or our side already ended)."""


class H2Server(H2Connection[ServerEvent]):
    """One server connection's protocol state (sans-io)."""

    _violations_end_connection = True
    _goaway_reason = True

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        max_streams: int,
        max_header_list: int,
        guard: FloodGuard | None = None,
    ) -> None:
        super().__init__(
            stream_window, connection_window, max_header_list, guard, expect_preface=True
        )
        self.max_streams = max_streams
        self._highest = 0  # the highest stream id the client opened
        self._last_head: tuple[Fields, dict[str, str], Fields, int | None] | None = None

    def initiate(self) -> None:
        """Our SETTINGS and the connection window: call once, first."""
        self._initiate(
            [
                (SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window),
                (SETTINGS_MAX_CONCURRENT_STREAMS, self.max_streams),
                (SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list),
                (SETTINGS_ENABLE_CONNECT_PROTOCOL, 1),
            ]
        )

    # -- sending -------------------------------------------------------------------------

    def _sendable(self, stream_id: int) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed or self.dead:
            raise StreamGone(f"HTTP/2 stream {stream_id} is closed")
        return stream

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> None:
        """A response head or trailers (``end``); the fields come validated."""
        self._sendable(stream_id)
        super().send_headers(stream_id, headers, end)

    def window(self, stream_id: int) -> int:
        """How many DATA bytes may be sent on ``stream_id`` now; raises :class:`StreamGone`."""
        stream = self._sendable(stream_id)
        return max(0, min(self._send_window, stream.send_window))

    def send_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """DATA within :meth:`window` (the caller checks), split at the frame size."""
        self._send_data(self._sendable(stream_id), stream_id, data, end)

    def end_stream(self, stream_id: int) -> None:
        self._sendable(stream_id)
        super().end_stream(stream_id)

    def _last_stream(self) -> int:
        return self._highest  # the last stream we took

    # -- receiving ----------------------------------------------------------------------------

    def _on_other(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[H2Event]
    ) -> None:
        if kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        super()._on_other(kind, flags, stream_id, payload, events)

    def _check_stream(self, stream_id: int) -> None:
        """A frame other than HEADERS/PRIORITY may only name a stream the client opened."""
        if stream_id % 2 == 0 or stream_id > self._highest:
            raise H2Error(PROTOCOL_ERROR, f"frame on stream {stream_id}, which is idle")

    def _on_setting(self, key: int, value: int, events: list[H2Event]) -> None:
        if key == SETTINGS_ENABLE_CONNECT_PROTOCOL and value > 1:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1")

    def _check_headers(self, stream_id: int) -> None:
        if stream_id % 2 == 0:
            raise H2Error(PROTOCOL_ERROR, f"HEADERS on even stream {stream_id}")

    def _check_data(self, stream_id: int, stream: Stream, flow: int) -> None:
        if stream.remote_closed:  # a request's body is over: only the connection's credit
            self._grant_connection(flow)
            raise H2Error(STREAM_CLOSED, "DATA after the end of the stream", stream_id)

    def _on_body(self, stream: Stream, data: bytes, end: bool) -> None:
        stream.received += len(data)
        if stream.expected is not None and (
            stream.received > stream.expected or (end and stream.received != stream.expected)
        ):
            raise H2Error(PROTOCOL_ERROR, "a body that does not match its content-length")

    def _on_block(self, stream_id: int, block: bytes, end: bool, events: list[H2Event]) -> None:
        try:  # decoded even for a stream we refuse: the decoder's table must stay in step
            fields = self._decoder.decode(block)
        except hpack.exceptions.OversizedHeaderListError:
            raise H2Error(PROTOCOL_ERROR, "header list larger than we allow") from None
        except (hpack.exceptions.HPACKError, ValueError, IndexError) as exc:
            raise H2Error(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream_id <= self._highest:  # trailers, or a stream already closed
            if stream is None:
                return  # a stream we reset or finished: trailers in flight are dropped
            if stream.remote_closed:
                raise H2Error(STREAM_CLOSED, "HEADERS after the end of the stream", stream_id)
            if not end:
                raise H2Error(PROTOCOL_ERROR, "trailers without END_STREAM")
            _fields(check_regular, fields)
            if stream.expected is not None and stream.received != stream.expected:
                raise H2Error(PROTOCOL_ERROR, "a body that does not match its content-length")
            self._close_remote(stream_id, stream)
            events.append(HeadersReceived(stream_id, 0, fields, True, trailers=True))
            return
        self._highest = stream_id
        pseudo, regular, expected = self._validated(fields)
        if len(self._streams) >= self.max_streams:
            self._frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM))
            return
        if end and expected:
            raise H2Error(PROTOCOL_ERROR, "a body that does not match its content-length")
        stream = Stream(self._peer_initial_window, self.stream_window, expected)
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


def _fields(check: Callable[[Fields], _T], fields: Fields) -> _T:
    """A ``h2fields`` check; a malformed head is a connection error (PROTOCOL_ERROR)."""
    try:
        return check(fields)
    except FieldError as exc:
        raise H2Error(PROTOCOL_ERROR, str(exc)) from None
