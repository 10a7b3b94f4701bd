"""The small exception hierarchy the HBONE edge raises (mapped from ssl, OSError and h2)."""

from __future__ import annotations


class HboneError(Exception):
    """Base of every HBONE failure."""


class ConnectFailed(HboneError):
    """Could not establish the HBONE connection (TCP, TLS or peer identity)."""


class StreamRefused(HboneError):
    """The server answered the CONNECT with a status other than 200."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class StreamReset(HboneError):
    """The stream was aborted, by the peer or because its connection died."""


class StreamClosed(HboneError):
    """An operation on a stream that can no longer do it (e.g. write after half-close)."""
