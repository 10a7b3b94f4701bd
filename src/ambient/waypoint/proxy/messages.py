"""What the downstream codecs (HTTP/1.1, HTTP/2) and the upstream client exchange.

A request or response body is a :class:`Body`: ``read()`` returns the next
chunk, ``b""`` at the end, and raises :class:`BodyAborted` when the sender
went away mid-body. Reading is what returns flow-control credit to the
sender, so a body is streamed with back-pressure and never held whole.
A :class:`ResponseSink` is where a response goes, on the downstream side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.fieldtext import strip_ows

__all__ = [
    "HOP_BY_HOP",
    "Body",
    "BodyAborted",
    "BytesBody",
    "DownstreamGone",
    "ResponseHead",
    "ResponseSink",
    "strip_hop_by_hop",
]

# Connection-specific fields (RFC 9110 7.6.1; forbidden in HTTP/2): never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "expect",  # the waypoint answers 100-continue itself, as Envoy
    }
)


class BodyAborted(Exception):
    """The body's sender reset or closed its stream before the body ended."""


class DownstreamGone(Exception):
    """The client reset its stream or connection: nothing more can be sent to it."""


class Body(Protocol):
    length: int | None  # Content-Length when known
    empty: bool  # known to have no body at all (no framing, END_STREAM on HEADERS)

    async def read(self) -> bytes: ...

    def ready(self) -> bytes | None:
        """The whole rest of the body when it is already in memory (taken), else None.

        Lets a small request go upstream in one write with its head.
        """
        ...


class BytesBody:
    """A body already in memory (direct responses, small mirrored requests)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length: int | None = len(data)
        self.empty = not data

    async def read(self) -> bytes:
        data, self._data = self._data, b""
        return data

    def ready(self) -> bytes | None:
        data, self._data = self._data, b""
        return data


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: Headers = ()  # lower-case names, hop-by-hop fields removed


class ResponseSink(Protocol):
    """The downstream side of one request: where its response goes."""

    @property
    def started(self) -> bool:
        """True once the response head was sent."""
        ...

    async def send_head(self, head: ResponseHead, *, end: bool, close: bool = False) -> None:
        """Send the status and headers; ``end``: no body follows; ``close``: last on connection."""
        ...

    async def send_data(self, data: bytes) -> None:
        """Send body bytes, waiting for the client's flow control; raises DownstreamGone."""
        ...

    async def end(self) -> None: ...

    def abort(self) -> None:
        """Reset the response mid-way (the client sees a reset, not a truncated success)."""
        ...


def strip_hop_by_hop(headers: Headers) -> Headers:
    """``headers`` without connection-specific fields and those ``connection`` names."""
    named = {
        strip_ows(token).lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    return tuple(
        (name, value)
        for name, value in headers
        if name not in HOP_BY_HOP and name not in named and not name.startswith(":")
    )
