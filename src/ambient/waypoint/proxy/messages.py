"""What the downstream codecs (HTTP/1.1, HTTP/2) and the upstream client exchange.

A request or response body is a :class:`Body`: ``read()`` returns the next
chunk, ``b""`` at the end, and raises :class:`BodyAborted` when the sender
went away mid-body. Reading is what returns flow-control credit to the
sender, so a body is streamed with back-pressure and never held whole.
Once ``read()`` returned ``b""``, ``trailers`` holds the message's trailer
fields (HTTP/2 trailing HEADERS: gRPC's ``grpc-status``); HTTP/1.1 trailers
are dropped, as Envoy does by default. A :class:`ResponseSink` is where a
response goes, on the downstream side; ``end(trailers)`` finishes it.

:class:`UpstreamRequest` is what the forwarder sends; ``version`` is the
HTTP version chosen for the upstream (``proxy.protocols``).
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
    "ConnectionSettings",
    "DownstreamGone",
    "DownstreamPipe",
    "ResponseHead",
    "ResponseSink",
    "UpstreamFailed",
    "UpstreamRequest",
    "strip_hop_by_hop",
]

# Connection-specific fields (RFC 9110 7.6.1; forbidden in HTTP/2): never forwarded
# (``te: trailers`` excepted: HTTP/2 allows it and gRPC servers require it).
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


class UpstreamFailed(Exception):
    """The upstream exchange failed; ``flag`` is Envoy's response flag (UF, UC, UR).

    ``refused``: the upstream refused the stream before processing it (HTTP/2
    REFUSED_STREAM, or a stream above a GOAWAY's last id): safe to retry.
    """

    def __init__(self, flag: str, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.flag = flag
        self.refused = refused


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """A cluster's connection limits (DestinationRule ``connectionPool``)."""

    max_requests: int = 0  # per connection; 0: unlimited
    idle_timeout: float | None = None  # None: the client's default
    connect_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    target: str  # path and query
    authority: str
    headers: Headers  # hop-by-hop fields already removed (but ``te: trailers``); no host
    version: str = "HTTP/1.1"  # or "HTTP/2"


class Body(Protocol):
    length: int | None  # Content-Length when known
    empty: bool  # known to have no body at all (no framing, END_STREAM on HEADERS)

    @property
    def trailers(self) -> Headers:
        """Trailer fields, known once ``read()`` returned ``b""`` (empty: none)."""
        ...

    async def read(self) -> bytes: ...

    def ready(self) -> bytes | None:
        """The whole rest of the body when it is already in memory (taken), else None.

        Lets a small request go upstream in one write with its head.
        """
        ...


class BytesBody:
    """A body already in memory (direct responses, small mirrored requests)."""

    def __init__(self, data: bytes, trailers: Headers = ()) -> None:
        self._data = data
        self.length: int | None = len(data)
        self.empty = not data and not trailers
        self.trailers = trailers

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

    async def send_whole(self, head: ResponseHead, data: bytes, trailers: Headers = ()) -> None:
        """``send_head``, ``send_data(data)`` and ``end(trailers)`` at once, for a response
        whose whole body is in memory (``data`` may be empty; not for a bodiless response:
        that is ``send_head(end=True)``): one write to the tunnel instead of three."""
        ...

    async def end(self, trailers: Headers = ()) -> None:
        """Finish the response, with trailer fields (sent where the protocol carries them)."""
        ...

    def abort(self) -> None:
        """Reset the response mid-way (the client sees a reset, not a truncated success)."""
        ...


class DownstreamPipe(Protocol):
    """The client's side of an upgrade (WebSocket): its answer, then a byte pipe.

    HTTP/1.1 answers ``101 Switching Protocols`` and the connection carries the
    bytes; HTTP/2 (extended CONNECT) answers ``200`` and the stream's DATA does.
    """

    async def accept(self, head: ResponseHead) -> int:
        """Answer the upgrade with the upstream's 101 ``head`` (translated as needed);
        returns the status the client got (101, or 200 for HTTP/2)."""
        ...

    async def read(self) -> bytes:
        """The client's next bytes; ``b""`` once it half-closed. Raises BodyAborted."""
        ...

    async def write(self, data: bytes) -> None:
        """Bytes to the client, with back-pressure. Raises DownstreamGone."""
        ...

    def write_eof(self) -> None: ...

    def abort(self) -> None: ...


def strip_hop_by_hop(headers: Headers) -> Headers:
    """``headers`` without connection-specific fields and those ``connection`` names.

    ``te`` is kept as ``te: trailers`` when it lists ``trailers`` (as Envoy does).
    The usual head has none of them but gRPC's ``te: trailers`` (and no ``connection``
    field, so nothing else is named either): it is answered after one pass.
    """
    te = False
    for name, value in headers:
        if name == "te" and value == "trailers":
            te = True
        elif name in HOP_BY_HOP or name[:1] == ":":
            break
    else:
        if te:
            return (*[pair for pair in headers if pair[0] != "te"], ("te", "trailers"))
        return headers if isinstance(headers, tuple) else tuple(headers)
    named = {
        strip_ows(token).lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    out = []
    trailers = False
    for name, value in headers:
        if name not in HOP_BY_HOP and name not in named and not name.startswith(":"):
            out.append((name, value))
        elif name == "te":
            trailers = trailers or "trailers" in (t.strip().lower() for t in value.split(","))
    if trailers:
        out.append(("te", "trailers"))
    return tuple(out)
