"""gRPC at the waypoint, as Envoy's router and local replies treat it.

- A request is gRPC when its ``content-type`` is ``application/grpc`` or
  starts with ``application/grpc+`` / ``application/grpc;`` (Envoy's
  ``isGrpcRequestHeaders``; gRPC-Web is not gRPC here).
- A local reply (a 403 from policy, a 503 ``no healthy upstream``, a route's
  direct response...) to a gRPC request is a *trailers-only* response:
  ``:status 200``, ``content-type: application/grpc``, ``grpc-status`` mapped
  from the HTTP status as Envoy's ``httpToGrpcStatus`` does (400 INTERNAL,
  401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504
  UNAVAILABLE, else UNKNOWN) and ``grpc-message`` the body's text
  (percent-encoded as gRPC requires).
- Decision: a request the waypoint times out (route timeout, ``grpc-timeout``
  or per-try timeout, flag ``UT``) is answered DEADLINE_EXCEEDED rather than
  the UNAVAILABLE of Envoy's 504 mapping: that is what Envoy answers when its
  stream deadline (``max_stream_duration`` with ``grpc_timeout_header_max``,
  the successor of the ``max_grpc_timeout`` Istio sets) fires, and what a gRPC
  client expects of a deadline.
- Deadlines (Istio sets ``max_grpc_timeout`` to the route timeout): a gRPC
  request's timeout is its ``grpc-timeout`` header, capped by the route's
  timeout when it has one; without the header, the route timeout. The header
  sent upstream on each attempt is the time left (Envoy rewrites it too).
"""

from __future__ import annotations

import math
import re

from ambient.waypoint.model import Headers

__all__ = [
    "DEADLINE_EXCEEDED",
    "GRPC_CONTENT_TYPE",
    "deadline",
    "format_timeout",
    "http_to_grpc",
    "is_grpc",
    "local_reply_headers",
    "parse_timeout",
]

GRPC_CONTENT_TYPE = "application/grpc"
DEADLINE_EXCEEDED = 4
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_UNKNOWN = 2
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MESSAGE_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}


def is_grpc(content_type: str | None) -> bool:
    """Whether a request with this ``content-type`` is gRPC (Envoy's test)."""
    if not content_type:
        return False
    ct = content_type.lower()
    return ct == GRPC_CONTENT_TYPE or ct.startswith(("application/grpc+", "application/grpc;"))


def http_to_grpc(status: int) -> int:
    """Envoy's mapping of an HTTP status to a gRPC status code."""
    return _HTTP_TO_GRPC.get(status, _UNKNOWN)


def parse_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` (``1S``, ``250m``, ...) in seconds; None when absent or malformed."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` value for ``seconds`` (milliseconds, rounded up; at least 1m)."""
    millis = max(1, math.ceil(seconds * 1000))
    if millis <= 99_999_999:
        return f"{millis}m"
    return f"{min(math.ceil(seconds), 99_999_999)}S"


def deadline(route_timeout: float | None, grpc_timeout: float | None) -> float | None:
    """A gRPC request's timeout in seconds (None: none), see the module docstring."""
    if grpc_timeout is None:
        return route_timeout
    if route_timeout is None:
        return grpc_timeout
    return min(route_timeout, grpc_timeout)


def _encode_message(text: str) -> str:
    """gRPC's percent-encoding of ``grpc-message`` (printable ASCII except ``%`` as is)."""
    data = text.encode("utf-8")
    if all(b in _MESSAGE_SAFE for b in data):
        return text
    return "".join(chr(b) if b in _MESSAGE_SAFE else f"%{b:02X}" for b in data)


def local_reply_headers(status: int, message: str, grpc_status: int | None = None) -> Headers:
    """The headers of a trailers-only answer to a gRPC request the waypoint answers itself."""
    code = http_to_grpc(status) if grpc_status is None else grpc_status
    headers = [("content-type", GRPC_CONTENT_TYPE), ("grpc-status", str(code))]
    if message:
        headers.append(("grpc-message", _encode_message(message)))
    return tuple(headers)
