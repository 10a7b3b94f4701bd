"""Trace context parsing and injection: W3C traceparent/tracestate and B3, valid and not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient.waypoint.tracing.context import Incoming, extract, inject

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("traceparent", f"00-{T}-{S}-01")], Incoming(T, S, True)),
        ([("traceparent", f"00-{T}-{S}-00"), ("tracestate", "a=1")], Incoming(T, S, False, "a=1")),
        ([("traceparent", f"00-{T.upper()}-{S}-03")], Incoming(T, S, True)),  # other flag bits
        ([("traceparent", f"01-{T}-{S}-01-future")], Incoming(T, S, True)),  # a later version
        ([("traceparent", f"00-{T}-{S}-01-extra")], None),  # version 00 is exactly 55 chars
        ([("traceparent", f"ff-{T}-{S}-01")], None),
        ([("traceparent", f"00-{'0' * 32}-{S}-01")], None),
        ([("traceparent", f"00-{T}-{'0' * 16}-01")], None),
        ([("traceparent", f"00-{T[:-1]}x-{S}-01")], None),
        ([("traceparent", "garbage")], None),
        # Invalid W3C, valid B3: B3 is used.
        ([("traceparent", "garbage"), ("b3", f"{T}-{S}-1")], Incoming(T, S, True, b3="single")),
        ([("b3", f"{T}-{S}")], Incoming(T, S, None, b3="single")),
        ([("b3", f"{T[16:]}-{S}-d")], Incoming("0" * 16 + T[16:], S, True, b3="single")),
        ([("b3", f"{T}-{S}-0-{S}")], Incoming(T, S, False, b3="single")),
        ([("b3", "0")], Incoming("", "", False, b3="single")),
        ([("b3", "nonsense")], None),
        (
            [("x-b3-traceid", T), ("x-b3-spanid", S), ("x-b3-sampled", "1")],
            Incoming(T, S, True, b3="multi"),
        ),
        (
            [("x-b3-traceid", T), ("x-b3-spanid", S), ("x-b3-flags", "1")],
            Incoming(T, S, True, b3="multi"),
        ),
        ([("x-b3-traceid", T), ("x-b3-spanid", S)], Incoming(T, S, None, b3="multi")),
        ([("x-b3-sampled", "0")], Incoming("", "", False, b3="multi")),
        ([("x-b3-traceid", T)], None),
        ([("user-agent", "curl")], None),
        # W3C wins over B3 when both are valid, as Envoy's OpenTelemetry tracer reads W3C.
        (
            [("b3", f"{T}-{S}-0"), ("traceparent", f"00-{T}-{S}-01")],
            Incoming(T, S, True, b3="single"),
        ),
    ],
)
def test_extract(headers: list[tuple[str, str]], expected: Incoming | None) -> None:
    assert extract(headers) == expected


def test_inject_replaces_every_trace_header() -> None:
    headers = (
        ("accept", "*/*"),
        ("traceparent", "old"),
        ("tracestate", "old"),
        ("b3", "old"),
        ("x-b3-spanid", "old"),
    )
    out = inject(headers, T, S, True, "a=1")
    assert out == (("accept", "*/*"), ("traceparent", f"00-{T}-{S}-01"), ("tracestate", "a=1"))
    single = inject((), T, S, False, "", "single", "1111111111111111")
    assert single == (("traceparent", f"00-{T}-{S}-00"), ("b3", f"{T}-{S}-0-1111111111111111"))
    multi = dict(inject((), T, S, True, "", "multi"))
    assert multi["x-b3-traceid"] == T and multi["x-b3-spanid"] == S
    assert multi["x-b3-sampled"] == "1" and "x-b3-parentspanid" not in multi


NAMES = ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled",
         "x-b3-flags", "user-agent"]  # fmt: skip
HEXISH = st.text(alphabet="0123456789abcdefABCDEF-xyz ", max_size=70)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.one_of(HEXISH, st.text(max_size=70)))))
def test_any_header_values_give_a_valid_context_or_none(headers: list[tuple[str, str]]) -> None:
    incoming = extract(headers)
    if incoming is None:
        return
    if incoming.trace_id:
        assert len(incoming.trace_id) == 32 and int(incoming.trace_id, 16) != 0
        assert len(incoming.span_id) == 16 and int(incoming.span_id, 16) != 0
        out = dict(inject(headers, incoming.trace_id, S, True, "", incoming.b3))
        assert extract(out.items()) is not None
    else:
        assert incoming.sampled is not None and incoming.b3
