"""Tracing through a real waypoint (spans collected from the tracer's sink), and the OTLP
exporter against a real Jaeger (OTLP/gRPC and OTLP/HTTP) and against no collector."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from pathlib import Path

import pytest

from ambient.hbone.messages import SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.waypoint.tracing.otlp import ExportTarget, SpanExporter
from ambient.waypoint.tracing.tracer import CLIENT, SERVER, ProxyInfo, Span, Tracer
from tests.component.waypoint.harness import ORDERS, start_mesh
from tests.component.waypoint.test_waypoint import open_tunnel, read_response
from tests.e2e.jaegerrun import running_jaeger
from tests.pki import make_ca

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"
INFO = ProxyInfo("waypoint~x", "waypoint.shop", "shop", "waypoint")


async def test_spans_and_the_context_the_app_sees(tmp_path: Path) -> None:
    spans: list[Span] = []
    tracer = Tracer(INFO, spans.extend, 0.0, rng=random.Random(1))
    async for mesh in start_mesh(make_ca(tmp_path), tracing=lambda: tracer):
        pool = ConnectionPool()
        try:
            stream = await open_tunnel(mesh, SocketAddress(ORDERS.addresses[0], 80), pool)
            stream.write(
                f"GET /hello HTTP/1.1\r\nhost: orders\r\ntraceparent: 00-{T}-{S}-01\r\n"
                f"b3: {T}-{S}-1\r\n\r\n".encode()
            )
            head, body = await read_response(stream)
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["name"]
            # Not sampled (0 %, no context): the waypoint's decision goes upstream, no spans.
            stream.write(b"GET /hello HTTP/1.1\r\nhost: orders\r\n\r\n")
            await read_response(stream)
        finally:
            await pool.close()
    seen = [r["headers"] for a in mesh.apps for r in a.requests]
    (traced,) = [h for h in seen if "b3" in h]
    (untraced,) = [h for h in seen if "b3" not in h]
    server, client = spans
    assert (server.kind, client.kind) == (SERVER, CLIENT)
    assert server.trace_id == client.trace_id == T and server.parent_id == S
    assert client.parent_id == server.span_id
    # The app sees the attempt's span as parent, in W3C and in the B3 form it came in.
    assert traced["traceparent"] == f"00-{T}-{client.span_id}-01"
    assert traced["b3"] == f"{T}-{client.span_id}-1-{server.span_id}"
    assert untraced["traceparent"].endswith("-00")
    attrs = dict(server.attributes)
    assert attrs["http.status_code"] == "200" and attrs["upstream_address"].endswith(":8080")
    assert server.name == f"{ORDERS.hostname}:80/*"
    assert dict(client.attributes)["upstream_cluster"] == f"outbound|80||{ORDERS.hostname}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def span(i: int) -> Span:
    s = Span(T, f"{i + 1:016x}", S, f"span {i}", SERVER, "")
    s.finish()
    return s


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_no_collector_drops_and_counts_without_raising(protocol: str) -> None:
    exporter = SpanExporter(
        ExportTarget("127.0.0.1", closed_port(), protocol, timeout=2), (), max_queue=3
    )
    exporter.submit([span(i) for i in range(5)])
    assert exporter.dropped == 2
    await exporter.flush()
    assert (exporter.failed, exporter.exported) == (3, 0)
    await exporter.aclose()
    exporter.submit([span(9)])  # after close: dropped, never queued
    assert exporter.dropped == 3


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_export_to_jaeger(tmp_path: Path, protocol: str) -> None:
    with running_jaeger(tmp_path) as jaeger:
        port = jaeger.ports.otlp_grpc if protocol == "grpc" else jaeger.ports.otlp_http
        service = f"waypoint-{protocol}.test"
        exporter = SpanExporter(
            ExportTarget("127.0.0.1", port, protocol), (("service.name", service),), interval=0.05
        )
        parent = span(0)
        parent.attributes.append(("http.method", "GET"))
        child = Span(T, "00000000000000aa", parent.span_id, "router c egress", CLIENT, "a=1")
        child.error = True
        child.finish()
        exporter.submit([parent, child])
        for _ in range(200):  # the background task sends within ~interval
            if exporter.exported:
                break
            await asyncio.sleep(0.05)
        assert exporter.exported == 2 and exporter.failed == 0
        await exporter.aclose()

        def found() -> dict[str, object] | None:
            traces = jaeger.traces(service)
            return traces[0] if traces else None

        trace = None
        for _ in range(100):
            trace = await asyncio.to_thread(found)
            if trace:
                break
            await asyncio.sleep(0.1)
        assert trace is not None
        spans = {s["operationName"]: s for s in trace["spans"]}  # type: ignore[attr-defined]
        assert set(spans) == {"span 0", "router c egress"}
        ref = spans["router c egress"]["references"][0]
        assert (ref["traceID"], ref["spanID"]) == (T, parent.span_id)
        tags = {t["key"]: t["value"] for t in spans["router c egress"]["tags"]}
        assert tags["otel.status_code"] == "ERROR" and tags["span.kind"] == "client"
        assert {t["key"]: t["value"] for t in spans["span 0"]["tags"]}["http.method"] == "GET"
