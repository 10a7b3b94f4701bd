"""Our protobuf writing of OTLP, read back with the official opentelemetry-proto messages."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from ambient.waypoint.tracing.tracer import CLIENT, SERVER, Span
from ambient.waypoint.tracing.wire import encode_request

T = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_request_decodes_field_by_field() -> None:
    root = Span(T, "00f067aa0ba902b7", "", "orders.shop.svc.cluster.local:8080/*", SERVER, "")
    root.attributes += [("http.method", "GET"), ("http.url", "http://o/" + "é" * 200)]
    root.start, root.end = 1_700_000_000_000_000_000, 1_700_000_000_123_456_789
    child = Span(T, "1111111111111111", root.span_id, "router c egress", CLIENT, "k=v,a=b")
    child.error = True
    child.start, child.end = root.start + 5, 0  # not ended: encoded as start
    body = encode_request([root, child], [("service.name", "waypoint.shop")], "ambient.waypoint")
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    assert [(a.key, a.value.string_value) for a in resource_spans.resource.attributes] == [
        ("service.name", "waypoint.shop")
    ]
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "ambient.waypoint"
    first, second = scope_spans.spans
    assert first.trace_id.hex() == T and first.span_id.hex() == "00f067aa0ba902b7"
    assert first.parent_span_id == b"" and first.trace_state == ""
    assert first.name == root.name and first.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert (first.start_time_unix_nano, first.end_time_unix_nano) == (root.start, root.end)
    assert [(a.key, a.value.string_value) for a in first.attributes] == root.attributes
    assert first.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    assert first.flags == 0x301
    assert second.parent_span_id.hex() == root.span_id and second.trace_state == "k=v,a=b"
    assert second.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert second.end_time_unix_nano == second.start_time_unix_nano == child.start
    assert second.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    # The same attribute twice (from the cache) encodes the same.
    again = ExportTraceServiceRequest.FromString(encode_request([root], [], "s"))
    assert list(again.resource_spans[0].scope_spans[0].spans[0].attributes) == list(
        first.attributes
    )
