"""A lean HTTP/2 client codec (sans-io) for the waypoint's upstream connections, in place of h2.

The h2 package spends most of an upstream gRPC call in header validation,
HPACK table searches and per-frame objects (about 250 µs of the waypoint's
~600 µs per call). This codec does only what a client of one origin needs,
with the same strictness where it matters:

- Outbound: the preface and our SETTINGS (no push, ``stream_window`` per
  stream, ``connection_window`` for the connection), HEADERS (split into
  CONTINUATION above the server's maximum frame size), DATA within the
  windows, RST_STREAM (nothing once the connection is closed or lost),
  WINDOW_UPDATE once half a window was consumed, PING and SETTINGS
  acknowledgements, GOAWAY. Header blocks are HPACK without a
  dynamic table and without Huffman coding (indexed static entries, else
  literals without indexing; a dynamic table size update to 0 after the
  server changes its table size): valid for any decoder, no state to keep,
  and cheap; the bytes cost nothing inside a local HBONE tunnel. Header fields
  come validated (``h1codec`` or the downstream HTTP/2 codec, or the
  configuration loader).
- Inbound: every frame type is checked as RFC 9113 asks (SETTINGS as the
  server's first frame, sizes, stream ids, padding, flow-control windows,
  SETTINGS values, CONTINUATION sequences, PUSH_PROMISE refused as we disable
  push, no stream depending on itself), header blocks are decoded with
  the ``hpack`` package (dynamic table, Huffman) under a 64 KiB list limit,
  and responses are checked (lower-case token names, exactly one ``:status``
  first, no connection-specific fields, no controls in values; trailers
  without pseudo-headers). A connection error queues GOAWAY and reports
  :class:`ConnectionLost`; a malformed response resets its stream
  (PROTOCOL_ERROR) and reports :class:`StreamReset`. :meth:`H2Client.receive_data`
  never raises for bad input.

The frames, windows and read loop are ``http2.connection``'s (shared with the server
codec); this module is what a client adds: stream ids it opens, responses,
and its policy for a violation on one stream (that stream is reset). Events
(``http2.events``) are plain objects returned by ``receive_data``; ``data_to_send``
gives the bytes to write.
"""

from __future__ import annotations

import re

import hpack.exceptions

from ambient.http2.connection import (
    CANCEL,
    COMPRESSION_ERROR,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    MAX_WINDOW,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    H2Connection,
    H2Error,
    Stream,
)
from ambient.http2.events import (
    Event,
    H2Event,
    HeadersReceived,
    SettingsChanged,
)
from ambient.http2.guard import FloodGuard
from ambient.http2.hpackmemo import encode_fields as encode_headers
from ambient.waypoint.proxy.h2fields import Fields

__all__ = [
    "CANCEL",
    "FLOW_CONTROL_ERROR",
    "FRAME_SIZE_ERROR",
    "MAX_HEADER_LIST",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "H2Client",
    "encode_headers",
]

MAX_HEADER_LIST = 64 * 1024
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")


# -- the connection --------------------------------------------------------------------------


class H2Client(H2Connection[Event]):
    """One client connection's protocol state (sans-io)."""

    _abuse_prefix = "upstream abuse: "

    def __init__(
        self, stream_window: int, connection_window: int, guard: FloodGuard | None = None
    ) -> None:
        """``guard``: the upstream gets our servers' budgets (``http2.guard``)."""
        super().__init__(stream_window, connection_window, MAX_HEADER_LIST, guard)
        self._next_id = 1
        self.max_concurrent_streams = 100  # until the server's SETTINGS say otherwise
        # The last response head and trailers checked: the decoder hands back the same
        # tuple for a repeated block, which is then checked once (held, so never reused).
        self._last_head: tuple[Fields, int, Fields] | None = None
        self._last_trailers: Fields = ()

    def initiate(self) -> None:
        """The preface, our SETTINGS and the connection window: call once, first."""
        self._out += PREFACE
        self._initiate(
            [
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_MAX_CONCURRENT_STREAMS, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window),
                (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            ]
        )

    # -- sending -------------------------------------------------------------------------

    def open_stream(self) -> int:
        stream_id = self._next_id
        self._next_id += 2
        self._streams[stream_id] = Stream(self._peer_initial_window, self.stream_window)
        return stream_id

    @property
    def streams_left(self) -> int:
        """Stream ids left on this connection (after that, a new connection is needed)."""
        return (MAX_WINDOW - self._next_id) // 2

    def window(self, stream_id: int) -> int:
        """How many DATA bytes may be sent on ``stream_id`` now."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        return max(0, min(self._send_window, stream.send_window))

    def forget(self, stream_id: int) -> None:
        """Drop a finished stream's state (both directions over, or reset)."""
        self._streams.pop(stream_id, None)

    def _last_stream(self) -> int:
        return max(0, self._next_id - 2)

    # -- receiving ----------------------------------------------------------------------------

    def _check_stream(self, stream_id: int) -> None:
        if stream_id % 2 == 0 or stream_id >= self._next_id:
            raise H2Error(PROTOCOL_ERROR, f"frame on stream {stream_id}, which we never opened")

    def _on_setting(self, key: int, value: int, events: list[H2Event]) -> None:
        if key == SETTINGS_MAX_CONCURRENT_STREAMS:
            self.max_concurrent_streams = value
            events.append(SettingsChanged(value))

    def _check_headers(self, stream_id: int) -> None:
        self._check_stream(stream_id)

    def _check_data(self, stream_id: int, stream: Stream, flow: int) -> None:
        if not stream.head or stream.remote_closed:
            self._grant_connection(flow)
            raise H2Error(PROTOCOL_ERROR, "DATA before a response head", stream_id)

    def _on_block(self, stream_id: int, block: bytes, end: bool, events: list[H2Event]) -> None:
        try:  # decoded even for a stream we dropped: the decoder's table must stay in step
            fields = self._decoder.decode(block)
        except (hpack.exceptions.HPACKError, ValueError, IndexError) as exc:
            raise H2Error(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.remote_closed:
            raise H2Error(STREAM_CLOSED, "HEADERS after the end of the stream", stream_id)
        if stream.head:  # trailers
            if not end:
                raise H2Error(PROTOCOL_ERROR, "trailers without END_STREAM", stream_id)
            if fields is not self._last_trailers:
                _check_fields(fields, stream_id)
                self._last_trailers = fields
            self._close_remote(stream_id, stream)
            events.append(HeadersReceived(stream_id, 0, fields, True, trailers=True))
            return
        last = self._last_head
        if last is not None and last[0] is fields:
            status, regular = last[1], last[2]
        else:
            status = _status(fields, stream_id)
            regular = fields[1:]
            _check_fields(regular, stream_id)
            self._last_head = (fields, status, regular)
        if status < 200:
            if end:
                raise H2Error(
                    PROTOCOL_ERROR, "an informational response ending the stream", stream_id
                )
            return  # 100 Continue and friends: the waypoint answered its client itself
        stream.head = True
        if end:
            self._close_remote(stream_id, stream)
        events.append(HeadersReceived(stream_id, status, regular, end))


def _status(fields: Fields, stream_id: int) -> int:
    if not fields or fields[0][0] != ":status":
        raise H2Error(PROTOCOL_ERROR, "a response without :status first", stream_id)
    value = fields[0][1]
    if len(value) != 3 or not value.isdigit() or not value.isascii():
        raise H2Error(PROTOCOL_ERROR, f"bad :status {value!r}", stream_id)
    return int(value)


def _check_fields(fields: Fields, stream_id: int) -> None:
    """Lower-case token names (so no pseudo-header), none connection-specific, no controls."""
    for name, value in fields:
        if not _NAME.fullmatch(name):
            raise H2Error(PROTOCOL_ERROR, f"bad header name {name[:40]!r}", stream_id)
        if name in _CONNECTION_SPECIFIC:
            raise H2Error(PROTOCOL_ERROR, f"connection-specific header {name!r}", stream_id)
        if _BAD_VALUE.search(value):
            raise H2Error(PROTOCOL_ERROR, f"header {name!r} with a control character", stream_id)
