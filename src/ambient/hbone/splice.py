"""Relaying bytes between an HBONE stream and a TCP connection, both directions.

Half-close is preserved both ways (TCP FIN <-> END_STREAM). A reset on either
side aborts the other (TCP RST <-> RST_STREAM), so an application never
mistakes a broken tunnel for a clean close.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from ambient.hbone.stream import HboneStream

READ_CHUNK = 256 * 1024


@dataclass(slots=True)
class RelayResult:
    """Bytes moved each way and how the relay ended."""

    to_stream: int = 0  # TCP -> HBONE
    from_stream: int = 0  # HBONE -> TCP
    error: str | None = None


async def relay(
    stream: HboneStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> RelayResult:
    """Copy until both directions finished; returns the byte counts."""
    result = RelayResult()

    async def tcp_to_stream() -> None:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                stream.write_eof()
                return
            stream.write(data)
            result.to_stream += len(data)
            await stream.drain()

    async def stream_to_tcp() -> None:
        while True:
            data = await stream.read()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            result.from_stream += len(data)
            await writer.drain()

    up = asyncio.ensure_future(tcp_to_stream())
    down = asyncio.ensure_future(stream_to_tcp())
    try:
        pending: set[asyncio.Future[None]] = {up, down}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    result.error = f"{type(exc).__name__}: {exc}"
                    _abort(stream, writer)
                    for other in pending:
                        other.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    return result
    except asyncio.CancelledError:
        for task in (up, down):
            task.cancel()
        _abort(stream, writer)
        raise
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return result


def _abort(stream: HboneStream, writer: asyncio.StreamWriter) -> None:
    stream.reset()  # no-op if the stream already died
    writer.transport.abort()
