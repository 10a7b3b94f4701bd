"""Reading HTTP/1.1 messages from an HBONE stream with :mod:`h1codec`: heads and streamed bodies.

One :class:`MessageReader` per connection (downstream tunnel or upstream
connection) holds the bytes read but not yet used, so pipelined or
early-arriving bytes are never lost between messages. A body is read with a
:class:`BodyReader` for its framing, one chunk per ``read()``: at most one
HBONE read (256 KiB) is held at a time, never the whole body.
"""

from __future__ import annotations

from ambient.hbone.stream import HboneStream
from ambient.waypoint.proxy.h1codec import MAX_HEAD, ChunkedDecoder, Framing, ParseError

__all__ = ["READ_SIZE", "BodyReader", "IncompleteMessage", "MessageReader"]

READ_SIZE = 256 * 1024


class IncompleteMessage(Exception):
    """The peer ended the stream in the middle of a message."""


class MessageReader:
    """Buffered reads of one HTTP/1.1 connection's bytes."""

    __slots__ = ("buffer", "stream")

    def __init__(self, stream: HboneStream, initial: bytes = b"") -> None:
        self.stream = stream
        self.buffer = initial

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
