"""Trace context on the wire: W3C ``traceparent``/``tracestate`` and Zipkin's B3, in and out.

Extraction (``extract``), in Envoy's order of preference: a valid ``traceparent``
(version ``00`` exactly as RFC'd; a higher version is read by its first four fields;
an all-zero id or ``ff`` version is invalid and ignored, so the waypoint starts a new
trace, as the W3C spec says), else B3 as one ``b3`` header
(``{trace}-{span}[-{sampled}[-{parent}]]`` or a lone ``0``/``1``/``d``), else the
``X-B3-*`` headers. A 64-bit B3 trace id is widened to 128 bits with zeros. B3's
debug flag (``d``, ``X-B3-Flags: 1``) means sampled.

Injection (``inject``): the upstream request gets ``traceparent`` with the
waypoint's span as parent, the ``tracestate`` it came with (the waypoint adds no
entry of its own), and, when the context came as B3, B3 again in the same form
(so an application that only speaks B3 keeps its trace; when both came, W3C gives
the context and B3 follows it). Every other trace header
the client sent is replaced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TRACE_HEADERS", "Incoming", "extract", "inject"]

TRACE_HEADERS = frozenset(
    {
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    }
)
_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class Incoming:
    """The context a request came with. ``trace_id`` empty: a B3 sampling decision alone."""

    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16 hex digits: the caller's span, the waypoint's parent
    sampled: bool | None  # None: the caller left the decision to us
    tracestate: str = ""
    b3: str = ""  # "" (W3C), "single" or "multi": how it came


def _hex(value: str, length: int) -> bool:
    return len(value) == length and set(value) <= _HEX


def _traceparent(value: str) -> tuple[str, str, bool] | None:
    value = value.strip().lower()
    parts = value.split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if not _hex(version, 2) or version == "ff":
        return None
    if version == "00" and (len(parts) != 4 or len(value) != 55):
        return None
    if not (_hex(trace_id, 32) and _hex(span_id, 16) and _hex(flags[:2], 2)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags[:2], 16) & 1)


def _b3_trace(value: str) -> str | None:
    value = value.strip().lower()
    if _hex(value, 16):
        value = "0" * 16 + value
    return value if _hex(value, 32) and value != _ZERO_TRACE else None


def _b3_sampled(value: str) -> bool | None:
    value = value.strip().lower()
    if value in ("1", "d", "true"):
        return True
    if value in ("0", "false"):
        return False
    return None


def _b3_single(value: str) -> Incoming | None:
    parts = value.strip().split("-")
    if len(parts) == 1:
        sampled = _b3_sampled(parts[0])
        return None if sampled is None else Incoming("", "", sampled, b3="single")
    trace_id = _b3_trace(parts[0])
    span_id = parts[1].strip().lower()
    if trace_id is None or not _hex(span_id, 16) or span_id == _ZERO_SPAN:
        return None
    sampled = _b3_sampled(parts[2]) if len(parts) > 2 else None
    return Incoming(trace_id, span_id, sampled, b3="single")


def extract(headers: Iterable[tuple[str, str]]) -> Incoming | None:
    """The request's trace context, or None when it has none (or only invalid ones)."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name in TRACE_HEADERS and name not in found:
            found[name] = value
    if not found:
        return None
    parent = found.get("traceparent")
    if parent is not None:
        parsed = _traceparent(parent)
        if parsed is not None:
            b3 = "single" if "b3" in found else "multi" if "x-b3-traceid" in found else ""
            return Incoming(*parsed, tracestate=found.get("tracestate", ""), b3=b3)
    single = found.get("b3")
    if single is not None:
        incoming = _b3_single(single)
        if incoming is not None:
            return incoming
    trace = found.get("x-b3-traceid")
    span = found.get("x-b3-spanid")
    if trace is not None and span is not None:
        trace_id = _b3_trace(trace)
        span_id = span.strip().lower()
        if trace_id is not None and _hex(span_id, 16) and span_id != _ZERO_SPAN:
            sampled = (
                True
                if found.get("x-b3-flags", "").strip() == "1"
                else _b3_sampled(found.get("x-b3-sampled", ""))
            )
            return Incoming(trace_id, span_id, sampled, b3="multi")
    if "x-b3-sampled" in found:
        sampled = _b3_sampled(found["x-b3-sampled"])
        if sampled is not None:
            return Incoming("", "", sampled, b3="multi")
    return None


def inject(
    headers: Iterable[tuple[str, str]],
    trace_id: str,
    span_id: str,
    sampled: bool,
    tracestate: str = "",
    b3: str = "",
    parent_id: str = "",
) -> tuple[tuple[str, str], ...]:
    """``headers`` with every trace header replaced by this context (see the module doc)."""
    out = [(k, v) for k, v in headers if k not in TRACE_HEADERS]
    out.append(("traceparent", f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"))
    if tracestate:
        out.append(("tracestate", tracestate))
    if b3 == "single":
        value = f"{trace_id}-{span_id}-{'1' if sampled else '0'}"
        out.append(("b3", f"{value}-{parent_id}" if parent_id else value))
    elif b3 == "multi":
        out += [
            ("x-b3-traceid", trace_id),
            ("x-b3-spanid", span_id),
            ("x-b3-sampled", "1" if sampled else "0"),
        ]
        if parent_id:
            out.append(("x-b3-parentspanid", parent_id))
    return tuple(out)
