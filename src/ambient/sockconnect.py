"""Connecting a non-blocking TCP socket to an IP literal, without the event loop's resolver.

uvloop's ``loop.sock_connect`` passes every address through its ``getaddrinfo``
with no socket type, which its numeric fast path refuses: each connect, even to
``127.0.0.1``, became a trip through libuv's thread pool (a worker wake-up, the
libc resolver, Python's IDNA codec, an eventfd back to the loop), tens of µs of
CPU per connection at the destination ztunnel. The per-connection paths
(``ztunnel.dial``, ``netns.NetnsThread.dial``) take IP literals only, so they
connect here directly: ``connect()``, and if it is in progress, a wait for the
socket to become writable and its ``SO_ERROR``, as asyncio's own loop does.

A non-blocking ``connect()`` to a local address (loopback, a pod's veth on the
same node) says "in progress" although the kernel has already completed the
handshake within the call: a socket that has a peer by then is connected, and
goes without the wait (a poll handle, two ``epoll_ctl``, a loop iteration).
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["connect"]


async def connect(
    sock: socket.socket,
    address: tuple[str, int],
    loop: asyncio.AbstractEventLoop | None = None,
    timeout: float | None = None,
) -> None:
    """Connect the non-blocking ``sock`` to ``address`` (an IP literal and a port).

    Raises ``OSError`` as ``connect`` would (``ConnectionRefusedError``, ...), with the
    address in the message, or ``TimeoutError`` when the handshake is not done after
    ``timeout`` seconds (only a connect still under way is timed: no timer otherwise);
    cancelling stops waiting (the caller closes the socket)."""
    try:
        sock.connect(address)
    except (BlockingIOError, InterruptedError):
        pass
    else:
        return
    try:
        sock.getpeername()  # ENOTCONN while the handshake is under way (or failed)
    except OSError:
        pass
    else:
        return
    loop = loop or asyncio.get_running_loop()
    fd = sock.fileno()
    waiter: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _writable, waiter)
    try:
        async with asyncio.timeout(timeout):
            await waiter
    finally:
        loop.remove_writer(fd)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, f"Connect call failed {address}")


def _writable(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
