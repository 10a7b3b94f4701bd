"""What the HTTP/2 codecs' ``receive_data`` report: plain objects, one per thing that
happened (the waypoint's ``h2client`` a response's, ``h2server`` a request's,
``http2.connection`` the connection's)."""

from __future__ import annotations

from dataclasses import dataclass

Headers = tuple[tuple[str, str], ...]  # the same shape as ``waypoint.model.Headers``

__all__ = [
    "ConnectionLost",
    "DataReceived",
    "Event",
    "GoAway",
    "H2Event",
    "HeadersReceived",
    "RequestReceived",
    "SettingsChanged",
    "StreamReset",
    "WindowOpened",
]


@dataclass(slots=True)
class HeadersReceived:
    """A response head (``status`` >= 100), or trailers (``trailers``; ``status`` 0)."""

    stream_id: int
    status: int
    headers: Headers
    end_stream: bool
    trailers: bool = False


@dataclass(slots=True)
class RequestReceived:
    """A request head: its pseudo-header fields and its regular fields, in order."""

    stream_id: int
    pseudo: dict[str, str]
    headers: tuple[tuple[str, str], ...]
    end_stream: bool


@dataclass(slots=True)
class DataReceived:
    stream_id: int
    data: bytes
    flow: int  # flow-controlled length (padding included): what to acknowledge
    end_stream: bool


@dataclass(slots=True)
class StreamReset:
    """The server reset the stream, or we did because its response was malformed."""

    stream_id: int
    error_code: int
    local: bool = False


@dataclass(slots=True)
class WindowOpened:
    """More may be sent on ``stream_id`` (0: on every stream)."""

    stream_id: int


@dataclass(slots=True)
class SettingsChanged:
    max_concurrent_streams: int


@dataclass(slots=True)
class GoAway:
    last_stream_id: int
    error_code: int


@dataclass(slots=True)
class ConnectionLost:
    """A connection error: GOAWAY is queued, nothing more is read."""

    error_code: int
    reason: str


Event = (
    HeadersReceived
    | DataReceived
    | StreamReset
    | WindowOpened
    | SettingsChanged
    | GoAway
    | ConnectionLost
)
H2Event = Event | RequestReceived  # what either codec may report
