"""The dashboard's collector scraping a waypoint's real metrics registry over HTTP, and its
server's answers (the page, the graph, refusals for other host names)."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from ambient.dashboard.server import Collector, DashboardServer
from ambient.httpd import AdminServer
from ambient.monitoring.exposition import render
from ambient.waypoint.proxy.metrics import WaypointMetrics


def labels(dst: str, code: str) -> dict[str, str]:
    from ambient.waypoint.proxy.metrics import HTTP_LABELS

    values = dict.fromkeys(HTTP_LABELS, "unknown")
    values |= {
        "reporter": "waypoint",
        "source_workload": "web",
        "source_workload_namespace": "shop",
        "destination_workload": dst,
        "destination_workload_namespace": "shop",
        "destination_service": "orders.shop.svc.cluster.local",
        "connection_security_policy": "mutual_tls",
        "response_code": code,
        "grpc_response_status": "",
    }
    return values


class StubMesh:
    """Stands in for the mesh's control API (a MeshSource); the metrics are served for real."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.dumps: list[dict[str, Any]] = []

    def describe(self) -> str:
        return "stub"

    def scrape_targets(self) -> list[dict[str, Any]]:
        return [
            {
                "targets": [self.target],
                "labels": {
                    "namespace": "shop",
                    "pod": "waypoint-1",
                    "gateway_networking_k8s_io_gateway_name": "waypoint",
                    "__metrics_path__": "/stats/prometheus",
                },
            },
            {"targets": ["127.0.0.1:1"], "labels": {"pod": "gone"}},  # refuses connections
        ]

    def config_dumps(self) -> list[dict[str, Any]]:
        return self.dumps

    def manifests(self) -> list[dict[str, Any]]:
        return []


def observe(metrics: WaypointMetrics, dst: str, code: str, count: int, ms: float) -> None:
    for i in range(count):
        metrics.observe_request(
            (dst, code, i % 1),
            lambda: labels(dst, code),
            duration_ms=ms,
            request_bytes=0,
            response_bytes=10,
        )


async def test_collector_turns_scrapes_into_the_split() -> None:
    metrics = WaypointMetrics()
    server = AdminServer({"/stats/prometheus": lambda _r: render(metrics.registry)})
    host, port = await server.start("127.0.0.1", 0)
    try:
        collector = Collector(StubMesh(f"{host}:{port}"), interval=1, window=60)
        observe(metrics, "orders-v1", "200", 5, 3.0)
        await collector.refresh()
        assert collector.graph["edges"] == []  # one scrape: no rates yet
        assert any("127.0.0.1:1" in p for p in collector.problems)
        observe(metrics, "orders-v1", "200", 45, 3.0)
        observe(metrics, "orders-v2", "200", 4, 30.0)
        observe(metrics, "orders-v2", "503", 1, 30.0)
        await collector.refresh()
        edges = {(e["source"], e["target"]): e for e in collector.graph["edges"]}
        assert set(edges) == {
            ("shop/web", "shop/waypoint"),
            ("shop/waypoint", "shop/orders-v1"),
            ("shop/waypoint", "shop/orders-v2"),
        }
        assert edges[("shop/waypoint", "shop/orders-v1")]["http"]["share"] == pytest.approx(0.9)
        assert edges[("shop/waypoint", "shop/orders-v2")]["http"]["error_rate"] == pytest.approx(
            0.2
        )
        p99 = edges[("shop/waypoint", "shop/orders-v2")]["http"]["p99_ms"]
        assert 25 < p99 <= 50  # in Envoy's 25-50 ms bucket
        assert collector.refreshes == 2
    finally:
        await server.close()


def get(port: int, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


async def test_server_answers_only_for_its_own_address() -> None:
    import asyncio

    collector = Collector(StubMesh("127.0.0.1:1"), interval=1, window=10)
    server = DashboardServer(collector)
    url = await server.start("127.0.0.1", 0)
    port = int(url.rstrip("/").rpartition(":")[2])
    try:
        status, headers, body = await asyncio.to_thread(get, port, "/", f"127.0.0.1:{port}")
        assert status == 200 and b"<svg" in body
        policy = headers["content-security-policy"]
        assert "script-src 'sha256-" in policy and "unsafe" not in policy
        assert headers["cache-control"] == "no-store"
        status, _, body = await asyncio.to_thread(get, port, "/api/graph", f"localhost:{port}")
        assert status == 200
        assert json.loads(body)["mesh"] == "stub"
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):
            status, _, body = await asyncio.to_thread(get, port, "/api/graph", host)
            assert status == 421, host
            assert b"mesh" not in body
    finally:
        await server.close()


def test_the_page_hashes_match_its_inline_script_and_style() -> None:
    """The policy names the page's own script: a browser runs it (checked in Chromium by
    tests/e2e/test_dashboard.py), and nothing injected."""
    import base64
    import hashlib
    from importlib import resources

    from ambient.dashboard.server import page_headers

    page = resources.files("ambient.dashboard").joinpath("page.html").read_text("utf-8")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = dict(page_headers(page))["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in policy


async def test_without_a_port_kiali_s_is_preferred_then_any_free_one() -> None:
    """As istioctl dashboard: the remote port (20001) if free, else a random one; a port
    given is taken as is (taken: an error)."""
    import errno
    import socket

    from ambient.cli.dashboard import DEFAULT_PORT, listen

    taken = socket.socket()
    try:
        try:
            taken.bind(("127.0.0.1", DEFAULT_PORT))
            taken.listen()
        except OSError as exc:  # someone else holds it: the fallback is tested all the same
            assert exc.errno == errno.EADDRINUSE
        first = DashboardServer(Collector(StubMesh("127.0.0.1:1"), interval=1, window=10))
        url = await listen(first, "127.0.0.1", None)
        try:
            assert not url.endswith(f":{DEFAULT_PORT}/")
            with pytest.raises(OSError):
                await listen(
                    DashboardServer(Collector(StubMesh("x"), interval=1, window=10)),
                    "127.0.0.1",
                    DEFAULT_PORT,
                )
        finally:
            await first.close()
    finally:
        taken.close()
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", DEFAULT_PORT))
    except OSError:
        pytest.skip(f"port {DEFAULT_PORT} is held by another program")
    finally:
        probe.close()
    free = DashboardServer(Collector(StubMesh("127.0.0.1:1"), interval=1, window=10))
    url = await listen(free, "127.0.0.1", None)
    try:
        assert url == f"http://127.0.0.1:{DEFAULT_PORT}/"
    finally:
        await free.close()
