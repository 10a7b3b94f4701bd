"""Events the sans-io HBONE connection reports (past tense: what happened on the wire)."""

from __future__ import annotations

from dataclasses import dataclass

from ambient.hbone.messages import ConnectRequest


@dataclass(frozen=True, slots=True)
class ConnectReceived:
    """Server side: a valid CONNECT arrived; answer it with ``respond()``."""

    stream_id: int
    request: ConnectRequest
    ended: bool = False  # the client half-closed at once (END_STREAM on HEADERS)


@dataclass(frozen=True, slots=True)
class ConnectRejected:
    """Server side: a CONNECT was malformed and has already been answered 400."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Client side: the server answered a CONNECT."""

    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Tunnel bytes arrived; report them with ``consumed()`` once delivered, to reopen the window."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (END_STREAM): no more bytes will arrive."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream was aborted (RST_STREAM from the peer, or refused by GOAWAY)."""

    stream_id: int
    error_code: int
    remote: bool


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """The peer answered our PING."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams; streams above ``last_stream_id`` were not processed."""

    last_stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The peer broke the protocol; a GOAWAY has been queued and the connection must close."""

    reason: str


Event = (
    ConnectReceived
    | ConnectRejected
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | PingAcknowledged
    | GoAwayReceived
    | ConnectionFailed
)


def without_stillborn(out: list[Event]) -> list[Event]:
    """Drop each CONNECT reset by the peer in the same read, and its reset: nobody
    has seen it yet, so no work starts for it at all."""
    if not any(isinstance(e, StreamReset) and e.remote for e in out):
        return out
    connects = {e.stream_id for e in out if isinstance(e, ConnectReceived)}
    dead = {
        e.stream_id
        for e in out
        if isinstance(e, StreamReset) and e.remote and e.stream_id in connects
    }
    if not dead:
        return out
    return [
        e for e in out if not (isinstance(e, ConnectReceived | StreamReset) and e.stream_id in dead)
    ]
