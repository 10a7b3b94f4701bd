"""Messages between the runtime and the launcher: a 4-byte big-endian length, then JSON.

Standard library only (the launcher imports it). Requests carry an ``id`` the
answer repeats; the launcher also sends, unasked, one ``hello`` at start and an
``exit`` for every child it reaps.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

__all__ = [
    "HEADER_SIZE",
    "MAX_MESSAGE",
    "WireError",
    "decode_body",
    "decode_length",
    "encode",
    "recv_message",
]

MAX_MESSAGE = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
"""Bytes of the length prefix."""


class WireError(Exception):
    """A message that is not a length-prefixed JSON object within bounds."""


def encode(message: dict[str, Any]) -> bytes:
    """One framed message."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise WireError(f"message of {len(body)} bytes is over {MAX_MESSAGE}")
    return _HEADER.pack(len(body)) + body


def decode_length(header: bytes) -> int:
    """The body length a header announces; WireError past the bound."""
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise WireError(f"message of {length} bytes announced, over {MAX_MESSAGE}")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of one message."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"message is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WireError("message is not a JSON object")
    return value


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message from a blocking socket; None at end of stream."""
    header = _recv_exactly(sock, HEADER_SIZE)
    if header is None:
        return None
    body = _recv_exactly(sock, decode_length(header))
    if body is None:
        raise WireError("stream ended inside a message")
    return decode_body(body)
