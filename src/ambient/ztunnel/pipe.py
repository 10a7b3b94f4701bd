"""Plain TCP relayed between two transports (a client's and an upstream connection), with
half-close kept: outbound to destinations reached without HBONE, and plaintext captured at
an enrolled pod (``ztunnel.plaintext``)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["TcpPipe"]


class _PipeEnd(asyncio.Protocol):
    """One side of a TCP-to-TCP relay; writes what it reads to the other side."""

    def __init__(self, pipe: TcpPipe, index: int) -> None:
        self.pipe = pipe
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.eof = False

    @property
    def other(self) -> _PipeEnd:
        return self.pipe.ends[1 - self.index]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pipe.counts[self.index] += len(data)
        if self.other.transport is not None:
            self.other.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        other = self.other.transport
        if other is not None and other.can_write_eof():
            other.write_eof()
        if self.other.eof:
            self.pipe.finish()
        return True

    def pause_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        other = self.other.transport
        if other is not None and not (self.eof and self.other.eof):
            other.abort() if exc is not None else other.close()
        self.transport = None
        self.pipe.finish()
        if other is None:  # both sides are gone: no callback comes any more
            self.pipe.release()


class TcpPipe:
    """Plain TCP between a client transport and an upstream connection, half-close kept."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.counts = [0, 0]  # [from client, from upstream]
        self.ends: tuple[_PipeEnd, ...] = (_PipeEnd(self, 0), _PipeEnd(self, 1))
        self.done: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    @property
    def downstream(self) -> _PipeEnd:
        return self.ends[0]

    @property
    def upstream(self) -> _PipeEnd:
        return self.ends[1]

    def abort(self) -> None:
        """Reset both sides (policy no longer allows this connection)."""
        for end in self.ends:
            if end.transport is not None:
                end.transport.abort()
        self.finish()

    def finish(self) -> None:
        if not self.done.done():
            for end in self.ends:
                if end.transport is not None:
                    with contextlib.suppress(Exception):
                        end.transport.close()
            self.done.set_result((self.counts[0], self.counts[1]))

    def release(self) -> None:
        """Both connections are lost: drop the ends (they refer to the pipe), so that the
        pipe and its ends are freed when the handler lets go of the pipe, not by the cyclic
        collector whenever it runs."""
        self.ends = ()
