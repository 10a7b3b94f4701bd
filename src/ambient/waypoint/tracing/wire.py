"""The OTLP ``ExportTraceServiceRequest`` in protobuf's wire format, written directly.

Building ``opentelemetry-proto`` messages cost about 45 us per span (25 attributes,
each a ``KeyValue`` holding an ``AnyValue``), as much as the rest of a request's
tracing together. The messages are simple, so they are written here as bytes: each
attribute is encoded once per distinct (key, value) and kept in a bounded cache
(most repeat: the method, status, cluster, the waypoint's own tags), and a span is
the concatenation of its fields. The fields and numbers are OTLP's
(``opentelemetry/proto/trace/v1/trace.proto``, ``common/v1``, ``resource/v1``,
``collector/trace/v1``); the tests decode this output with the official messages.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ambient.waypoint.tracing.tracer import Span

__all__ = ["encode_request"]

_CACHE_LIMIT = 8192
_cache: dict[tuple[str, str], bytes] = {}
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
# trace_id=1, span_id=2, trace_state=3, parent_span_id=4, name=5 (length-delimited),
# kind=6 (varint), start=7, end=8 (fixed64), attributes=9, status=15, flags=16 (fixed32)
_FLAGS = b"\x85\x01" + _pack_i(0x301)  # sampled; has-is-remote with is-remote (the parent)
_STATUS_ERROR = b"\x7a\x02\x18\x02"  # status { code: STATUS_CODE_ERROR }


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _attribute(key: str, value: str) -> bytes:
    """``KeyValue{key, value: AnyValue{string_value}}``."""
    any_value = _field(b"\x0a", value.encode())
    return _field(b"\x0a", key.encode()) + _field(b"\x12", any_value)


# Values new with every request: encoded each time, never cached (they would only churn it).
_UNIQUE = frozenset({"guid:x-request-id", "http.url", "request_size", "response_size"})


def _span_attribute(key: str, value: str) -> bytes:
    """A span's attribute field (number 9), cached by (key, value)."""
    encoded = _cache.get((key, value))
    if encoded is None:
        encoded = _field(b"\x4a", _attribute(key, value))
        if key in _UNIQUE:
            return encoded
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[(key, value)] = encoded
    return encoded


def _span(span: Span) -> bytes:
    parts = [
        b"\x0a\x10", bytes.fromhex(span.trace_id),
        b"\x12\x08", bytes.fromhex(span.span_id),
    ]  # fmt: skip
    if span.tracestate:
        parts.append(_field(b"\x1a", span.tracestate.encode()))
    if span.parent_id:
        parts += (b"\x22\x08", bytes.fromhex(span.parent_id))
    parts += (
        _field(b"\x2a", span.name.encode()),
        b"\x30", bytes((span.kind,)),
        b"\x39", _pack_q(span.start),
        b"\x41", _pack_q(span.end or span.start),
    )  # fmt: skip
    get = _cache.get
    for item in span.attributes:
        parts.append(get(item) or _span_attribute(*item))
    if span.error:
        parts.append(_STATUS_ERROR)
    parts.append(_FLAGS)
    return b"".join(parts)


def encode_request(spans: Sequence[Span], resource: Sequence[tuple[str, str]], scope: str) -> bytes:
    """``ExportTraceServiceRequest{resource_spans: [{resource, scope_spans: [{scope, spans}]}]}``."""
    resource_msg = b"".join(_field(b"\x0a", _attribute(k, v)) for k, v in resource)
    scope_spans = _field(b"\x0a", _field(b"\x0a", scope.encode())) + b"".join(
        _field(b"\x12", _span(span)) for span in spans
    )
    resource_spans = _field(b"\x0a", resource_msg) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)
