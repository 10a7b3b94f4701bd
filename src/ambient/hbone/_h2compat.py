"""Contained fixes for h2 and hyperframe, shared by the HBONE core and the waypoint.

Repr cost. h2 formats ``repr(frame)`` for its trace log on every received
frame, even when no logger is configured, and hyperframe's repr hex-encodes
the *whole* payload before keeping the first 20 hex digits. For HBONE's 1 MiB
DATA frames that was a third of all CPU time. The replacement hex-encodes only
the 10 bytes it shows, so its output is identical. Even so, formatting a frame
costs 5-7 µs, four times per HBONE stream (~12 % of the HTTP/2 work of a stream,
``bench/hbone_core.py``), for a log call that h2's default logger drops: h2's
connection module now gets a ``repr`` that defers the formatting to a logger
that formats the message (the same text then), :class:`_LazyRepr`.

Closed-stream memory. h2 remembers how each of the last 65,536 closed streams
of a connection was closed (an ordered dict entry and an int, ~150 bytes each),
so a long-lived connection - a pooled HBONE tunnel, a client's HTTP/2
connection to a waypoint - grew by ~10 MiB before levelling off, per
connection. :class:`H2Connection` keeps the last :data:`CLOSED_STREAMS_KEPT`.
The record only matters for a frame that crossed our RST_STREAM in flight (it
is then a stream error, ignored, rather than a connection error, RFC 9113
§5.4.2), which arrives within one round trip; Go's x/net/http2 keeps no record
at all, and nghttp2 keeps about as many closed streams as it allows open ones.
"""

from __future__ import annotations

import binascii
import builtins

import h2.connection
import hyperframe.frame

CLOSED_STREAMS_KEPT = 1000
"""Closed streams h2 remembers per connection (h2's default: 65,536)."""


class H2Connection(h2.connection.H2Connection):
    """h2's connection, remembering at most :data:`CLOSED_STREAMS_KEPT` closed streams."""

    MAX_CLOSED_STREAMS = CLOSED_STREAMS_KEPT


def _raw_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    shown = binascii.hexlify(data[:10]).decode("ascii")
    return "<hex:" + shown + ("..." if len(data) > 10 else "") + ">"


class _LazyRepr:
    """``repr(obj)``, computed only when formatted (``%s`` or ``%r``)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return builtins.repr(self.obj)

    __repr__ = __str__


def install() -> None:
    """Replace hyperframe's payload repr with the bounded one, and h2's connection module's
    ``repr`` (used only for its received-frame trace log) with the lazy one (idempotent)."""
    hyperframe.frame._raw_data_repr = _raw_data_repr
    setattr(h2.connection, "repr", _LazyRepr)  # noqa: B010 (a module global, on purpose)
