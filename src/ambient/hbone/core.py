"""HBONE's HTTP/2 role on the project's own core (``ambient.http2.connection``), in place of h2.

:class:`HboneCore` is one HBONE connection's HTTP/2, client or server side, as a
role of :class:`~ambient.http2.connection.H2Connection` (frames, windows,
SETTINGS, PING, GOAWAY, CONTINUATION, the ``FloodGuard``). What HBONE adds:

- Streams: a server takes CONNECT requests on odd stream ids the client opens
  (at most ``max_streams`` at once: one more is a connection error, as it was
  with h2 once our SETTINGS apply, which is at once); a client opens them and
  takes responses (1xx ignored, then one final ``:status``, trailers ending
  the stream). Header blocks are decoded (``hpackmemo.decode_plain`` for a block
  that needs no table, as ours, else ``hpack``) and checked by
  ``fields.check_block``; a malformed block is a connection error
  (PROTOCOL_ERROR) on either side. A CONNECT that is well-formed HTTP/2 but
  not an HBONE request (``messages.ConnectRequest``) is answered 400 here.
- DATA is delivered as it arrives: a frame's header is checked (stream state,
  both receive windows charged, so a peer overrunning a window fails on the
  header: FLOW_CONTROL_ERROR) and each piece of its payload is reported at
  once, so a 1 MiB frame is never buffered whole. Only padded DATA waits for
  its whole frame (its padding is credited back at once).
- Closed streams: the last :data:`CLOSED_STREAMS_KEPT` are remembered with how
  they closed (RFC 9113 5.1, 5.4.2): frames on a stream we reset are ignored
  (the peer had not seen our RST_STREAM yet); DATA on any other closed stream
  answers RST_STREAM(STREAM_CLOSED) (its flow is credited back), as does HEADERS
  on one the peer reset, while HEADERS on one both sides ended is a connection
  error (STREAM_CLOSED; PROTOCOL_ERROR on one never opened or forgotten), as h2.
  WINDOW_UPDATE and RST_STREAM on a closed stream are ignored.
- Abuse: a server counts streams the client resets before they were answered
  (``FloodGuard.early_reset``: the rapid reset), on the RST_STREAM's header.
- ``reply_bytes``: bytes queued in answer to what was read (SETTINGS and PING
  acknowledgements, RST_STREAM, 400s), which the peer owes reading.

Where it differs from h2 on purpose (``tests/unit/hbone/test_differential.py``):
DATA before a response's head is a stream error (PROTOCOL_ERROR; h2 delivered
it), frames on a stream we reset are ignored (h2 answered RST_STREAM), and a
stream error on a half-closed stream is reported as a reset of it like any other.

:meth:`HboneCore.receive_data` reports ``hbone.events`` plus the core's
``WindowOpened`` (more may be sent); ``protocol.HboneConnection`` builds the
tunnels (outbound queues, half-close, credit as consumed) on top.
"""

from __future__ import annotations

import struct
from typing import Any, cast

import hpack
import hpack.exceptions

from ambient.hbone import events as ev
from ambient.hbone.fields import UNINDEXED, BadBlock, Block, check_block
from ambient.hbone.messages import BadRequest, ConnectRequest
from ambient.http2.connection import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_CONNECT_PROTOCOL,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    H2Connection,
    H2Error,
    Stream,
)
from ambient.http2.events import WindowOpened
from ambient.http2.guard import Abuse, FloodGuard
from ambient.http2.hpackmemo import decode_plain, encode_fields, encode_literal

__all__ = ["CLOSED_STREAMS_KEPT", "CoreEvent", "HboneCore"]

CLOSED_STREAMS_KEPT = 1000
"""Closed streams remembered per connection (h2 kept 65,536: ~10 MiB per pooled
connection). The record only matters for frames that crossed our RST_STREAM or END_STREAM
in flight, within a round trip; nghttp2 keeps about as many as it allows open."""

CoreEvent = ev.Event | WindowOpened
_Events = list[Any]  # what the handlers append to: CoreEvents (the core's signatures say H2Event)
_HEADER = struct.Struct(">IBI")
_BY_US, _BY_PEER, _BY_END = 0, 1, 2  # how a remembered stream closed
_NO_LIMIT = 2**32 + 1  # the peer's SETTINGS_MAX_CONCURRENT_STREAMS until it sends one


class HboneCore(H2Connection[CoreEvent]):
    """One HBONE connection's HTTP/2 state, client or server side (sans-io)."""

    _violations_end_connection = False  # as h2: stream errors (window, priority) reset it
    _goaway_reason = True

    def __init__(
        self,
        client: bool,
        *,
        stream_window: int,
        connection_window: int,
        max_frame_size: int,
        max_header_list: int,
        max_streams: int,
        guard: FloodGuard,
    ) -> None:
        super().__init__(
            stream_window, connection_window, max_header_list, guard,
            expect_preface=not client, max_frame_size=max_frame_size,
        )  # fmt: skip
        self._flood = guard
        self.client = client
        self.max_streams = max_streams  # inbound (server side)
        self.peer_max_streams = _NO_LIMIT  # outbound: the peer's limit
        self.failed: str | None = None
        self.reply_bytes = 0
        self._hpack = hpack.Decoder(max_header_list)
        self._next_id = 1  # client: the next stream we open
        self._highest = 0  # server: the highest stream the client opened
        self._unanswered: set[int] = set()  # server: CONNECTs not answered yet
        self._closed: dict[int, int] = {}  # recently closed streams: how (_BY_*)
        self._inbuf = bytearray()  # an incomplete frame (at most one, plus a read)
        self._head_checked = False  # the frame at the start of _inbuf passed the guard
        self._data_left = 0  # payload bytes of a DATA frame still to arrive ...
        self._data_sid = 0  # ... for this stream (0: to drop, already credited)
        self._data_end = False  # ... which ends the stream

    def initiate(self) -> None:
        """The client preface, our SETTINGS and the connection window: call once, first."""
        settings = [
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window),
            (SETTINGS_MAX_FRAME_SIZE, self.max_frame_size),
            (SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list),
        ]
        if self.client:
            self._out += PREFACE
        else:
            settings.append((SETTINGS_MAX_CONCURRENT_STREAMS, self.max_streams))
        self._initiate(settings)

    # -- sending -------------------------------------------------------------------------

    def open_stream(self, request: ConnectRequest) -> int:
        """A CONNECT on a new stream (client side); its id."""
        stream_id = self._next_id
        if stream_id > MAX_WINDOW:
            raise RuntimeError("stream ids exhausted on this HBONE connection")
        self._next_id += 2
        self._streams[stream_id] = Stream(self._peer_initial_window, self.stream_window)
        headers = request.to_headers()
        if any(name in UNINDEXED for name, _ in headers):
            block = encode_fields([f for f in headers if f[0] not in UNINDEXED]) + b"".join(
                encode_literal(n, v, never_indexed=True) for n, v in headers if n in UNINDEXED
            )
        else:
            block = encode_fields(headers)
        self._send_block(stream_id, block, False)
        return stream_id

    def respond(self, stream_id: int, status: int, end: bool) -> bool | None:
        """Answer a CONNECT (server side); False if it cannot be (stream or connection gone),
        None if it was answered already (it is not answered again)."""
        if stream_id not in self._unanswered:
            return None
        self._unanswered.discard(stream_id)
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed or self.dead:
            return False
        self.send_headers(stream_id, [(":status", str(status))], end)
        return True

    def window(self, stream_id: int) -> int:
        """DATA bytes that may be sent on ``stream_id`` now (0 if it may not)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed or self.dead:
            return 0
        return min(self._send_window, stream.send_window)

    def data_header(self, stream_id: int, size: int, end: bool) -> bytes:
        """The header of a DATA frame of ``size`` bytes within :meth:`window` (the caller
        sends the payload after it); the windows are debited."""
        stream = self._streams[stream_id]
        self._send_window -= size
        stream.send_window -= size
        if end:
            self._close_local(stream_id)
        return _HEADER.pack((size << 8) | DATA, END_STREAM if end else 0, stream_id)

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM on an empty DATA frame, if our side of the stream is still open."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.local_closed and not self.dead:
            super().end_stream(stream_id)

    def ping(self, payload: bytes) -> None:
        if not self.dead:
            self._frame(PING, 0, 0, payload)

    def forget(self, stream_id: int) -> None:
        """Drop a stream the peer will not use (above its GOAWAY's last stream)."""
        if self._streams.pop(stream_id, None) is not None:
            self._remember(stream_id, _BY_US)

    def windows(self, stream_id: int) -> list[int]:
        """[ours to send, the peer's] on ``stream_id`` (0: the connection); [-1, -1] once gone."""
        if not stream_id:
            return [self._send_window, self._recv_window]
        stream = self._streams.get(stream_id)
        return [stream.send_window, stream.recv_window] if stream else [-1, -1]

    def _last_stream(self) -> int:
        return max(0, self._next_id - 2) if self.client else self._highest

    # -- stream bookkeeping --------------------------------------------------------------

    def _remember(self, stream_id: int, how: int) -> None:
        closed = self._closed
        closed[stream_id] = how
        if len(closed) > CLOSED_STREAMS_KEPT:
            del closed[next(iter(closed))]

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self._unanswered.discard(stream_id)
        if stream_id in self._streams:
            self._remember(stream_id, _BY_US)
        super().reset(stream_id, code)

    def _close_local(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.local_closed = True
            if stream.remote_closed:
                del self._streams[stream_id]
                self._remember(stream_id, _BY_END)

    def _close_remote(self, stream_id: int, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._streams.pop(stream_id, None)
            self._remember(stream_id, _BY_END)

    def _on_closed(self, stream_id: int, headers: bool = False) -> None:
        """DATA or HEADERS on a stream that is no longer open (not idle)."""
        how = self._closed.get(stream_id)
        if how == _BY_US:
            return  # sent before the peer read our RST_STREAM: ignored (RFC 9113 5.1)
        if how == _BY_PEER or not headers:  # a stream error (5.4.2), no connection error
            self._frame(RST_STREAM, 0, stream_id, struct.pack(">I", STREAM_CLOSED))
            return
        if how is None:  # a lower id than one opened since (5.1.1), or forgotten
            raise H2Error(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, which is closed")
        raise H2Error(STREAM_CLOSED, f"frame on stream {stream_id}, which is closed")

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[CoreEvent]:
        """Feed bytes read from the peer (kept parts copied); what happened. Never raises."""
        if self.dead:
            return []
        events: _Events = []
        before = len(self._out)
        try:
            self._receive(data, events)
        except H2Error as exc:
            self._fail(events, exc.code, f"HTTP/2 protocol error: {exc}")
        except Abuse as exc:  # also a frame over our maximum size, refused on its header
            self._fail(events, exc.error_code, str(exc))
        else:
            self.reply_bytes += len(self._out) - before
        return events

    def _fail(self, events: _Events, code: int, reason: str) -> None:
        self.failed = reason
        self.close(code, reason.encode()[:256])
        self._inbuf = bytearray()
        self._data_left = 0
        # CONNECTs read with the frames that failed the connection start no work at all.
        events[:] = [e for e in events if type(e) is not ev.ConnectReceived]
        events.append(ev.ConnectionFailed(reason))

    def _receive(self, data: bytes | bytearray | memoryview, events: _Events) -> None:
        if self._data_left:  # the rest of a DATA frame's payload
            take = min(self._data_left, len(data))
            self._data_piece(self._data_sid, bytes(data[:take]), events)
            self._data_left -= take
            if not self._data_left and self._data_end:
                self._data_ended(self._data_sid, events)
            if take == len(data):
                return
            data = data[take:]
        if self._inbuf:
            self._inbuf += data
            buf: bytes | bytearray | memoryview = self._inbuf
        else:
            buf = data
        size = len(buf)
        pos = 0
        if self._preface:
            pos = min(self._preface, size)
            start = len(PREFACE) - self._preface
            if buf[:pos] != PREFACE[start : start + pos]:
                raise H2Error(PROTOCOL_ERROR, "not the HTTP/2 client preface")
            self._preface -= pos
        # Every frame header of this read passes the guard first, once per frame (before its
        # payload is buffered, before any frame is handled: a flood is refused unparsed).
        scan = pos
        checked = self._head_checked and buf is self._inbuf
        while size - scan >= 9:
            word, flags, stream_id = _HEADER.unpack_from(buf, scan)
            if checked:
                checked = False
            else:
                self._check_header(word & 0xFF, flags, stream_id & MAX_WINDOW, word >> 8)
            scan += 9 + (word >> 8)
        self._head_checked = False
        while size - pos >= 9:
            word, flags, stream_id = _HEADER.unpack_from(buf, pos)
            length, kind = word >> 8, word & 0xFF
            stream_id &= MAX_WINDOW
            if kind == DATA and not flags & PADDED:
                target = self._data_start(flags, stream_id, length, events)
                start = pos + 9
                have = min(length, size - start)
                if have:
                    self._data_piece(target, bytes(buf[start : start + have]), events)
                pos = start + have
                if have < length:
                    self._data_left, self._data_sid = length - have, target
                    self._data_end = bool(flags & END_STREAM)
                    break
                if flags & END_STREAM:
                    self._data_ended(target, events)
                continue
            if size - pos - 9 < length:
                self._head_checked = True
                break  # incomplete: wait for the rest
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            try:
                self._on_frame(kind, flags, stream_id, payload, events)
            except H2Error as exc:
                if not exc.stream_id:
                    raise
                self._stream_error(exc, events)
        if buf is self._inbuf:
            del self._inbuf[:pos]
        elif pos < size:
            self._inbuf = bytearray(buf[pos:])

    def _check_header(self, kind: int, flags: int, stream_id: int, length: int) -> None:
        self._flood.frame(kind, flags, length)
        if length > self.max_frame_size:
            raise H2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
        if not self._settings_seen:
            if kind != SETTINGS or flags & 0x1:
                raise H2Error(PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._settings_seen = True
        if (
            kind == RST_STREAM
            and not self.client
            and (stream_id in self._unanswered or stream_id > self._highest)
        ):  # a CONNECT not answered yet (or not even read yet: further on in this read)
            self._flood.early_reset()

    def _data_start(self, flags: int, stream_id: int, length: int, events: _Events) -> int:
        """A DATA frame's header: the stream to deliver its payload to, or 0 (dropped, its
        flow credited back). Both receive windows are charged here."""
        if self._block is not None:
            raise H2Error(PROTOCOL_ERROR, "a header block was interrupted")
        if stream_id == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        self._check_stream(stream_id)
        if length > self._recv_window:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the connection window (flow control)")
        self._recv_window -= length
        stream = self._streams.get(stream_id)
        if stream is None:
            self._grant_connection(length)
            self._on_closed(stream_id)
            return 0
        try:
            if stream.remote_closed:
                raise H2Error(STREAM_CLOSED, "DATA after the end of the stream", stream_id)
            if self.client and not stream.head:
                raise H2Error(PROTOCOL_ERROR, "DATA before the response", stream_id)
        except H2Error as exc:
            self._grant_connection(length)
            self._stream_error(exc, events)
            return 0
        if length > stream.recv_window:
            raise H2Error(FLOW_CONTROL_ERROR, "DATA beyond the stream window (flow control)")
        stream.recv_window -= length
        return stream_id

    def _data_piece(self, stream_id: int, piece: bytes, events: _Events) -> None:
        if not stream_id:
            return
        if stream_id in self._streams:
            if piece:
                events.append(ev.DataReceived(stream_id, piece))
        else:  # reset meanwhile: nobody will consume it
            self._grant_connection(len(piece))

    def _data_ended(self, stream_id: int, events: _Events) -> None:
        stream = self._streams.get(stream_id) if stream_id else None
        if stream is not None:
            self._close_remote(stream_id, stream)
            events.append(ev.StreamEnded(stream_id))

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: _Events) -> None:
        """A padded DATA frame (the others never get here): its padding is credited at once."""
        target = self._data_start(flags, stream_id, len(payload), events)
        if not target:
            return
        data = self._unpad(flags, payload)
        padding = len(payload) - len(data)
        if data:
            events.append(ev.DataReceived(stream_id, data))
        if flags & END_STREAM:
            self._data_ended(stream_id, events)
        if padding:
            self.acknowledge(stream_id, padding)

    def _stream_error(self, exc: H2Error, events: _Events) -> None:
        if exc.stream_id in self._streams:
            events.append(ev.StreamReset(exc.stream_id, exc.code, True))
        self.reset(exc.stream_id, exc.code)

    def _check_stream(self, stream_id: int) -> None:
        """A frame other than HEADERS/PRIORITY may only name a stream that is not idle."""
        if stream_id % 2 == 0 or stream_id >= (self._next_id if self.client else self._highest + 1):
            raise H2Error(PROTOCOL_ERROR, f"frame on stream {stream_id}, which is idle")

    def _check_headers(self, stream_id: int) -> None:
        if self.client:
            self._check_stream(stream_id)
        elif stream_id % 2 == 0:
            raise H2Error(PROTOCOL_ERROR, f"HEADERS on even stream {stream_id}")

    def _on_setting(self, key: int, value: int, events: _Events) -> None:
        if key == SETTINGS_MAX_CONCURRENT_STREAMS:
            self.peer_max_streams = value
        elif key == SETTINGS_ENABLE_CONNECT_PROTOCOL and value > 1:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1")

    def _on_other(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: _Events
    ) -> None:
        if kind == RST_STREAM:
            if stream_id == 0:
                raise H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise H2Error(FRAME_SIZE_ERROR, "RST_STREAM of a bad size")
            self._check_stream(stream_id)
            self._unanswered.discard(stream_id)
            if self._streams.pop(stream_id, None) is not None:
                self._remember(stream_id, _BY_PEER)
                events.append(ev.StreamReset(stream_id, int.from_bytes(payload, "big"), True))
        elif kind == PING and flags & 0x1:
            if stream_id != 0:
                raise H2Error(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2Error(FRAME_SIZE_ERROR, "PING of a bad size")
            events.append(ev.PingAcknowledged(payload))
        elif kind == GOAWAY:
            if stream_id != 0:
                raise H2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2Error(FRAME_SIZE_ERROR, "GOAWAY of a bad size")
            last, code = struct.unpack_from(">II", payload)
            events.append(ev.GoAwayReceived(last & MAX_WINDOW, code))
        else:
            super()._on_other(kind, flags, stream_id, payload, events)

    def _on_block(self, stream_id: int, block: bytes, end: bool, events: _Events) -> None:
        headers = decode_plain(block)  # ours (and any block that needs no table): cheap
        if headers is None:
            try:  # decoded even for a stream that is gone: the table must stay in step
                headers = cast("list[tuple[bytes, bytes]]", self._hpack.decode(block, raw=True))
            except hpack.exceptions.OversizedHeaderListError:
                raise H2Error(ENHANCE_YOUR_CALM, "header list larger than we allow") from None
            except (hpack.exceptions.HPACKError, ValueError, IndexError, UnicodeError) as exc:
                raise H2Error(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        elif sum(len(n) + len(v) + 32 for n, v in headers) > self.max_header_list:
            raise H2Error(ENHANCE_YOUR_CALM, "header list larger than we allow")
        if not self.client and stream_id > self._highest:
            self._on_request(stream_id, headers, end, events)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._on_closed(stream_id, headers=True)
            return
        if stream.remote_closed:
            raise H2Error(STREAM_CLOSED, "HEADERS after the end of the stream", stream_id)
        if self.client and not stream.head:
            self._on_response(stream_id, stream, headers, end, events)
            return
        _check(headers, Block.TRAILERS)
        if not end:
            raise H2Error(PROTOCOL_ERROR, "trailers without END_STREAM")
        self._close_remote(stream_id, stream)
        events.append(ev.StreamEnded(stream_id))

    def _on_request(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool, events: _Events
    ) -> None:
        self._highest = stream_id
        if len(self._streams) >= self.max_streams:
            raise H2Error(PROTOCOL_ERROR, f"more than {self.max_streams} concurrent streams")
        _check(headers, Block.REQUEST)
        stream = Stream(self._peer_initial_window, self.stream_window)
        stream.remote_closed = end
        self._streams[stream_id] = stream
        try:
            request = ConnectRequest.from_headers(headers)
        except BadRequest as exc:
            self.send_headers(stream_id, [(":status", "400")], True)
            events.append(ev.ConnectRejected(stream_id, str(exc)))
            return
        self._unanswered.add(stream_id)
        events.append(ev.ConnectReceived(stream_id, request, ended=end))
        if end:
            events.append(ev.StreamEnded(stream_id))

    def _on_response(
        self,
        stream_id: int,
        stream: Stream,
        headers: list[tuple[bytes, bytes]],
        end: bool,
        events: _Events,
    ) -> None:
        _check(headers, Block.RESPONSE)
        value = next(v for n, v in headers if n == b":status")
        if value[:1] == b"1":  # informational: nothing for HBONE
            if end:
                raise H2Error(PROTOCOL_ERROR, "an informational response ending the stream")
            return
        stream.head = True
        events.append(ev.ResponseReceived(stream_id, int(value) if value.isdigit() else 0))
        if end:
            self._close_remote(stream_id, stream)
            events.append(ev.StreamEnded(stream_id))


def _check(headers: list[tuple[bytes, bytes]], kind: Block) -> None:
    try:
        check_block(headers, kind)
    except BadBlock as exc:
        raise H2Error(PROTOCOL_ERROR, str(exc)) from None
