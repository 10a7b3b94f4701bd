"""Sampling decisions, the context passed upstream, and the spans of one request."""

from __future__ import annotations

import ipaddress
import random
import uuid

from ambient.identity.spiffe import SpiffeId
from ambient.waypoint.model import Downstream, RequestHead, Target
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.metrics import WaypointMetrics
from ambient.waypoint.tracing.tracer import CLIENT, SERVER, ProxyInfo, Span, Tracer

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
INFO = ProxyInfo(
    "waypoint~10.0.0.9~wp-0.shop~shop.svc.cluster.local", "waypoint.shop", "shop", "waypoint"
)


def tracer(sampling: float, sink: list[Span] | None = None, **kwargs: object) -> Tracer:
    collected = sink if sink is not None else []
    return Tracer(INFO, collected.extend, sampling, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


def head(*headers: tuple[str, str]) -> RequestHead:
    return RequestHead("GET", "orders:8080", "/api?x=1", headers)


def test_a_parents_decision_is_kept_whatever_the_sampling() -> None:
    sampled = tracer(0).begin(head(("traceparent", f"00-{T}-{S}-01")), "r")
    assert sampled is not None and sampled.sampled and sampled.trace_id == T
    assert sampled.parent_id == S
    assert tracer(100).begin(head(("traceparent", f"00-{T}-{S}-00")), "r") is None


def test_without_a_context_the_waypoint_decides_and_says_so_upstream() -> None:
    trace = tracer(0).begin(head(), str(uuid.uuid4()))
    assert trace is not None and not trace.sampled and trace.server is None
    headers = dict(trace.upstream_headers((("accept", "*/*"),)))
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, flags) == ("00", "00") and trace_id == trace.trace_id
    assert span_id == trace.span_id
    assert tracer(100).begin(head(), "r").sampled  # type: ignore[union-attr]


def test_sampling_uses_the_request_id_so_proxies_agree() -> None:
    ids = [str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(4000)]
    first = [tracer(10).begin(head(), i).sampled for i in ids]  # type: ignore[union-attr]
    other: list[Span] = []
    again = [Tracer(INFO, other.extend, 10).begin(head(), i).sampled for i in ids]  # type: ignore[union-attr]
    assert first == again  # another tracer (another random generator), the same decisions
    assert 300 < sum(first) < 500  # ~10 %
    off = tracer(10, use_request_id=False)
    assert 300 < sum(off.begin(head(), "same").sampled for _ in range(4000)) < 500  # type: ignore[union-attr]


def test_spans_of_a_request_with_a_retry() -> None:
    spans: list[Span] = []
    trace = tracer(0, spans).begin(
        head(("traceparent", f"00-{T}-{S}-01"), ("user-agent", "curl/8"), ("tracestate", "a=1")),
        "rid",
    )
    assert trace is not None
    cluster = "outbound|8080||orders.shop.svc.cluster.local"
    first = trace.attempt(cluster, "10.0.0.5:8080", "HTTP/1.1")
    assert first is not None
    trace.attempt_result(first, 503)
    first.finish()
    second = trace.attempt(cluster, "10.0.0.6:8080", "HTTP/2")
    assert second is not None
    trace.attempt_result(second, 200)
    upstream = dict(trace.upstream_headers((), second.span_id))
    assert upstream["traceparent"] == f"00-{T}-{second.span_id}-01"
    assert upstream["tracestate"] == "a=1"
    record = RequestRecord(
        WaypointMetrics(),
        Target("shop", "orders.shop.svc.cluster.local", ipaddress.ip_address("10.96.0.1"), 8080),
        Downstream(SpiffeId.workload("shop", "web"), ipaddress.ip_address("10.0.0.2"), 4000),
        None,
        "HTTP/1.1",
        method="GET", path="/api?x=1", authority="orders:8080", request_id="rid", status=200,
        upstream_addr="10.0.0.6:8080",
    )  # fmt: skip
    trace.finish(record, cluster, 8080)
    server, *clients = spans
    assert server.kind == SERVER and server.parent_id == S and server.trace_id == T
    assert server.name == "orders.shop.svc.cluster.local:8080/*"
    attrs = dict(server.attributes)
    assert attrs["http.url"] == "http://orders:8080/api?x=1" and attrs["user_agent"] == "curl/8"
    assert attrs["guid:x-request-id"] == "rid" and attrs["upstream_cluster"] == cluster
    assert attrs["istio.canonical_service"] == "waypoint" and attrs["component"] == "proxy"
    assert attrs["istio.source_principal"] == "spiffe://cluster.local/ns/shop/sa/web"
    assert "error" not in attrs and not server.error
    assert [c.kind for c in clients] == [CLIENT, CLIENT]
    assert all(c.parent_id == server.span_id and c.end for c in clients)
    assert clients[0].name == f"router {cluster} egress" and clients[0].error
    assert dict(clients[0].attributes)["error"] == "true"
    assert dict(clients[1].attributes)["http.status_code"] == "200"


def test_an_unsampled_trace_has_no_spans_and_costs_no_export() -> None:
    spans: list[Span] = []
    trace = tracer(0, spans).begin(head(), "rid")
    assert trace is not None and trace.attempt("c", "a", "HTTP/1.1") is None
