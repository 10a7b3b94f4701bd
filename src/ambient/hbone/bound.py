"""Connecting from a chosen source address without exhausting source ports.

ztunnel connects to applications from the original client's address (the
loopback pod addresses in local mode). ``bind((ip, 0))`` before ``connect``
makes the kernel pick a source port free for *every* destination, so each
closed connection's TIME_WAIT keeps its port out of use for all of them: under
a high connection rate the ephemeral range (about 28,000 ports) fills, every
``bind`` walks it (milliseconds of kernel time) and then fails with
EADDRINUSE. ``IP_BIND_ADDRESS_NO_PORT`` (Linux 4.2+, what Envoy and Istio's
ztunnel use for the same purpose) defers the port choice to ``connect``, where
only the 4-tuple has to be unique.

The connect itself is ``ambient.sockconnect.connect``: uvloop's ``sock_connect``
sends even an IP literal through libuv's resolver threads.
"""

from __future__ import annotations

import contextlib
import socket

from ambient import sockconnect
from ambient.ipparse import parse_ip

# Not named in Python's socket module before 3.12; the value is Linux's.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def connect_from(host: str, port: int, local: tuple[str, int]) -> socket.socket:
    """A non-blocking TCP socket bound to ``local`` and connected to ``host:port``
    (both IP literals); raises ``OSError`` as ``connect`` would."""
    family = socket.AF_INET6 if parse_ip(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if local[1] == 0:
            with contextlib.suppress(OSError):  # not Linux: plain bind, as before
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind(local)
        await sockconnect.connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock
