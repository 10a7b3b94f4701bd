"""How ztunnel opens a plain TCP connection: the one place that picks where it starts from.

Three handlers connect upstream over plain TCP: inbound (to the application,
after an HBONE tunnel), captured plaintext (to the application, in-pod mode)
and outbound (to a destination outside the mesh, or any destination of a pod
outside the mesh). Each connects *as* someone: the caller (inbound, so the
application sees who called) or the source pod (outbound). Where that is
possible:

- in-pod mode: from inside a pod's network namespace (``via``, given by
  ``ztunnel.capture``), which binds the source address itself where it can;
- local mode, a loopback source (pods get ``127.10.x.y``): bound to it with
  ``IP_BIND_ADDRESS_NO_PORT`` (as ``hbone.bound``: no source port exhaustion);
- otherwise from the host's own address.

The whole connect, socket and protocol, is bounded by ``timeout``. Addresses are IP
literals, connected without the event loop's resolver (``ambient.sockconnect``).

Per connection, in local mode: the socket is made non-blocking by ``socket()``
itself (no ``ioctl``); only a handshake still under way is timed (a loopback
connect is done within ``connect()``: no timer); and the socket's class names its
family and type as constants, which uvloop's ``create_connection`` reads (the
``socket.socket`` properties build an enum member per read, ~1.3 µs each).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ambient.hbone.bound import IP_BIND_ADDRESS_NO_PORT
from ambient.ipparse import parse_ip
from ambient.sockconnect import connect as connect_socket

__all__ = ["CONNECT_TIMEOUT", "Dialer", "SocketDialer"]

CONNECT_TIMEOUT = 5.0
P = TypeVar("P", bound=asyncio.BaseProtocol)
# (host, port, source address or None) -> a socket connected to host:port
SocketDialer = Callable[[str, int, str | None], Awaitable[socket.socket]]
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)


class _Stream4(socket.socket):
    """A TCP/IPv4 socket whose family and type are plain class constants."""

    __slots__ = ()
    family = socket.AF_INET
    type = socket.SOCK_STREAM


class _Stream6(socket.socket):
    """A TCP/IPv6 socket whose family and type are plain class constants."""

    __slots__ = ()
    family = socket.AF_INET6
    type = socket.SOCK_STREAM


class Dialer:
    """Plain TCP connections for one handler (see the module docstring)."""

    def __init__(self, via: SocketDialer | None = None, timeout: float = CONNECT_TIMEOUT) -> None:
        self.via = via
        self.timeout = timeout

    async def connect(
        self, host: str, port: int, source: str | None, factory: Callable[[], P]
    ) -> P:
        """Connect to ``host:port`` (IP literals) as ``source``; the protocol ``factory``
        made. Raises ``OSError``, or ``TimeoutError`` after :attr:`timeout`."""
        loop = asyncio.get_running_loop()
        if self.via is not None:
            async with asyncio.timeout(self.timeout):
                sock = await self.via(host, port, source)
                return await _transport(loop, sock, factory)
        # Only the handshake can take time here (``create_connection`` with a connected
        # socket is one loop iteration): ``socket`` times it.
        return await _transport(loop, await self.socket(host, port, source), factory)

    async def socket(self, host: str, port: int, source: str | None) -> socket.socket:
        """A non-blocking socket connected to ``host:port`` as ``source`` where possible."""
        if self.via is not None:
            async with asyncio.timeout(self.timeout):
                return await self.via(host, port, source)
        kind = _Stream6 if parse_ip(host).version == 6 else _Stream4
        sock = kind(kind.family, socket.SOCK_STREAM | _NONBLOCK)
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            if source is not None and parse_ip(source).is_loopback:
                with contextlib.suppress(OSError):  # not Linux: a plain bind, as before
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
            await connect_socket(sock, (host, port), timeout=self.timeout)
        except BaseException:
            sock.close()
            raise
        return sock


async def _transport(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], P]
) -> P:
    try:
        _, protocol = await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol
