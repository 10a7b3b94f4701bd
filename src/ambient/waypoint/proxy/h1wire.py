"""Reading HTTP/1.1 messages from an HBONE stream with :mod:`h1codec`: heads and streamed bodies.

One :class:`MessageReader` per connection (downstream tunnel or upstream
connection) holds the bytes read but not yet used, so pipelined or
early-arriving bytes are never lost between messages. It also keeps the last
head it parsed (its bytes and the result, which is never changed): a connection
whose next head is byte for byte the same (a client repeating its request, an
upstream its response head) skips the parse; likewise the last response head it
wrote (downstream). A body is read with a
:class:`BodyReader` for its framing, one chunk per ``read()``: at most one
HBONE read (256 KiB) is held at a time, never the whole body.
"""

from __future__ import annotations

from ambient.hbone.stream import HboneStream
from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.h1codec import (
    MAX_HEAD,
    ChunkedDecoder,
    Framing,
    ParsedRequest,
    ParsedResponse,
    ParseError,
    parse_request_head,
    parse_response_head,
    response_head_bytes,
)

__all__ = ["READ_SIZE", "BodyReader", "IncompleteMessage", "MessageReader"]

READ_SIZE = 256 * 1024


class IncompleteMessage(Exception):
    """The peer ended the stream in the middle of a message."""


class MessageReader:
    """Buffered reads of one HTTP/1.1 connection's bytes."""

    __slots__ = ("_last_request", "_last_response", "_last_written", "buffer", "stream")

    def __init__(self, stream: HboneStream, initial: bytes = b"") -> None:
        self.stream = stream
        self.buffer = initial
        self._last_request: tuple[bytes, ParsedRequest] | None = None
        self._last_response: tuple[bytes, str, ParsedResponse] | None = None
        self._last_written: tuple[int, Headers, bytes] | None = None

    def response_head_bytes(self, status: int, headers: Headers) -> bytes:
        """:func:`h1codec.response_head_bytes` for a response on this connection; the last
        bytes again when status and fields are the same (a server answering alike)."""
        last = self._last_written
        if last is not None and last[0] == status and last[1] == headers:
            return last[2]
        wire = response_head_bytes(status, headers)
        self._last_written = (status, headers, wire)
        return wire

    def request_head(self, end: int) -> ParsedRequest:
        """:func:`parse_request_head` of the buffered head ending at ``end`` (not consumed);
        the last result again when the head's bytes are the same."""
        raw = self.buffer[:end]
        last = self._last_request
        if last is not None and last[0] == raw:
            return last[1]
        parsed = parse_request_head(raw, end)
        self._last_request = (raw, parsed)
        return parsed

    def response_head(self, end: int, method: str) -> ParsedResponse:
        """:func:`parse_response_head` of the buffered head answering ``method``, as
        :meth:`request_head`."""
        raw = self.buffer[:end]
        last = self._last_response
        if last is not None and last[0] == raw and last[1] == method:
            return last[2]
        parsed = parse_response_head(raw, end, method)
        self._last_response = (raw, method, parsed)
        return parsed

    async def fill(self) -> bool:
        """Read more into the buffer; False at the end of the stream."""
        data = await self.stream.read(READ_SIZE)
        if not data:
            return False
        self.buffer = self.buffer + data if self.buffer else data
        return True

    def buffered_head_end(self) -> int | None:
        """The offset just past a whole head already buffered, else None (no read);
        raises :class:`ParseError` (431) for a head over ``MAX_HEAD``."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_HEAD:
            if end >= 0 or len(self.buffer) > MAX_HEAD:
                raise ParseError("header section too large", 431)
            return None
        return end + 4

    async def head_end(self) -> int | None:
        """Read until a whole head is buffered; the offset just past its blank line.

        None: the stream ended cleanly before the first byte of a message.
        Raises :class:`ParseError` (431) for a head over ``MAX_HEAD`` and
        :class:`IncompleteMessage` when the stream ends mid-head.
        """
        searched = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                if end + 4 > MAX_HEAD:
                    raise ParseError("header section too large", 431)
                return end + 4
            if len(self.buffer) > MAX_HEAD:
                raise ParseError("header section too large", 431)
            searched = len(self.buffer)
            if not await self.fill():
                if not self.buffer:
                    return None
                raise IncompleteMessage("stream ended inside a message head")

    def consume(self, size: int) -> None:
        self.buffer = self.buffer[size:]


class BodyReader:
    """One message body, read as the consumer asks (back-pressure through HBONE windows)."""

    __slots__ = ("_decoder", "_reader", "complete", "framing", "remaining")

    def __init__(self, reader: MessageReader, framing: Framing, length: int) -> None:
        self._reader = reader
        self.framing = framing
        self.remaining = length
        self.complete = framing is Framing.NONE
        self._decoder = ChunkedDecoder() if framing is Framing.CHUNKED else None

    @property
    def buffered(self) -> bool:
        """Whether bytes after the head are already buffered (the body has begun to arrive)."""
        return bool(self._reader.buffer)

    def ready(self) -> bytes | None:
        """The whole rest of a Content-Length body if it is already buffered (taken), else None."""
        if self.complete:
            return b""
        reader = self._reader
        if self.framing is not Framing.LENGTH or len(reader.buffer) < self.remaining:
            return None
        data = reader.buffer[: self.remaining]
        reader.consume(self.remaining)
        self.remaining = 0
        self.complete = True
        return data

    async def read(self) -> bytes:
        """The next body bytes; ``b""`` at the end. Raises ParseError, IncompleteMessage, HboneError."""
        if self.complete:
            return b""
        reader = self._reader
        if self.framing is Framing.LENGTH:
            if reader.buffer:
                data = reader.buffer[: self.remaining]
                reader.consume(len(data))
            else:
                data = await reader.stream.read(min(self.remaining, READ_SIZE))
                if not data:
                    raise IncompleteMessage(f"stream ended with {self.remaining} body bytes due")
            self.remaining -= len(data)
            self.complete = not self.remaining
            return data
        if self._decoder is not None:
            while True:
                data, used = self._decoder.decode(reader.buffer)
                if used:
                    reader.consume(used)
                if self._decoder.done:
                    self.complete = True
                    return data
                if data:
                    return data
                if not await reader.fill():
                    raise IncompleteMessage("stream ended inside a chunked body")
        # Framing.CLOSE: everything until the end of the stream.
        if reader.buffer:
            data, reader.buffer = reader.buffer, b""
            return data
        data = await reader.stream.read(READ_SIZE)
        if not data:
            self.complete = True
        return data
