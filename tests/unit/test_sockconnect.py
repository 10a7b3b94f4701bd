"""Connecting to an IP literal: at once when the kernel already completed the handshake,
else after waiting for the socket; a refusal raises as ``connect`` would."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ambient.sockconnect import connect


async def test_a_local_connect_completes_without_waiting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.socket() as sock:
        sock.setblocking(False)
        coro = connect(sock, listener.getsockname())
        with pytest.raises(StopIteration):  # done on its first step: no wait for writability
            coro.send(None)
        assert sock.getpeername() == listener.getsockname()


async def test_a_refused_connect_raises() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
    with socket.socket() as sock:  # nothing listens there now
        sock.setblocking(False)
        with pytest.raises(ConnectionRefusedError, match=r"127\.0\.0\.1"):
            await asyncio.wait_for(connect(sock, address), 10)


async def test_a_connect_still_under_way_is_waited_for() -> None:
    """A peer that has not answered yet (its SYN-ACK not seen): wait until it is writable."""

    class Slow:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock
            self.asked = 0

        def connect(self, address: tuple[str, int]) -> None:
            self.sock.connect_ex(address)
            raise BlockingIOError

        def getpeername(self) -> tuple[str, int]:
            self.asked += 1
            raise OSError(107, "not connected (yet)")

        def fileno(self) -> int:
            return self.sock.fileno()

        def getsockopt(self, level: int, name: int) -> int:
            return self.sock.getsockopt(level, name)

    with socket.create_server(("127.0.0.1", 0)) as listener, socket.socket() as sock:
        sock.setblocking(False)
        slow = Slow(sock)
        await asyncio.wait_for(connect(slow, listener.getsockname()), 10)  # type: ignore[arg-type]
        assert slow.asked == 1
        assert sock.getpeername() == listener.getsockname()


async def test_a_handshake_that_does_not_complete_times_out() -> None:
    """A listener whose accept queue is full drops the SYN: the connect stays under way."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        queued = []
        try:
            for _ in range(8):  # fill the accept queue (nothing accepts)
                sock = socket.socket()
                sock.setblocking(False)
                queued.append(sock)
                sock.connect_ex(address)
            await asyncio.sleep(0.05)
            with socket.socket() as sock:
                sock.setblocking(False)
                with pytest.raises(TimeoutError):
                    await connect(sock, address, timeout=0.3)
        finally:
            for sock in queued:
                sock.close()
