"""Protocol detection on a new tunnel: HTTP/1.x, HTTP/2 with prior knowledge, or other TCP.

As Envoy's HTTP inspector: the HTTP/2 connection preface means h2c
(prior knowledge); a well-formed HTTP/1 request line (``METHOD target
HTTP/1.x``) means HTTP/1; anything else is passed through as TCP. Decision:
a client that sends nothing within ``timeout`` (server-first protocols such
as MySQL or SMTP) is passed through as TCP too, so those work through a
waypoint without declaring the port's protocol.
"""

from __future__ import annotations

import asyncio
import enum
import re

from ambient.hbone.stream import HboneStream

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_SNIFF = 16 * 1024  # a request line longer than this is not treated as HTTP
DEFAULT_TIMEOUT = 5.0

_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_REQUEST_LINE = re.compile(rb"%s{1,32} [^ \r\n]+ HTTP/1\.[01]\r?\n" % _TCHAR)
_PARTIAL = re.compile(rb"%s{0,32}( ([^ \r\n]*( H?T?T?P?/?1?\.?[01]?\r?)?)?)?" % _TCHAR)


class Protocol(enum.Enum):
    HTTP1 = "HTTP/1.1"
    HTTP2 = "HTTP/2"
    TCP = "tcp"


def classify(prefix: bytes) -> Protocol | None:
    """The protocol ``prefix`` (the first bytes a client sent) starts, or None: need more bytes."""
    if prefix.startswith(H2_PREFACE):
        return Protocol.HTTP2
    if H2_PREFACE.startswith(prefix):
        return None
    line_end = prefix.find(b"\n")
    if line_end >= 0:
        return Protocol.HTTP1 if _REQUEST_LINE.fullmatch(prefix[: line_end + 1]) else Protocol.TCP
    if len(prefix) >= MAX_SNIFF or not _PARTIAL.fullmatch(prefix):
        return Protocol.TCP
    return None


async def sniff(stream: HboneStream, timeout: float = DEFAULT_TIMEOUT) -> tuple[Protocol, bytes]:
    """Read until the protocol is known; returns it and the bytes read (to be replayed).

    End of stream or the timeout before a decision: TCP.
    """
    buffered = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Protocol.TCP, buffered
        try:
            chunk = await asyncio.wait_for(stream.read(MAX_SNIFF), remaining)
        except TimeoutError:
            return Protocol.TCP, buffered
        if not chunk:
            return Protocol.TCP, buffered
        buffered += chunk
        found = classify(buffered)
        if found is not None:
            return found, buffered
