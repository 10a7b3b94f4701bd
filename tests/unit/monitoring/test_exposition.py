"""The proxies' and the control plane's metrics have no ``_created`` series (Istio emits
none): prometheus-client adds one per counter and histogram unless told not to."""

from __future__ import annotations

from prometheus_client import generate_latest

from ambient.waypoint.proxy.metrics import HTTP_LABELS, WaypointMetrics
from ambient.ztunnel.metrics import LABELS, Metrics


def test_ztunnel_and_waypoint_metrics_have_no_created_series() -> None:
    ztunnel = Metrics()
    cell = ztunnel.cell(dict.fromkeys(LABELS, "x"))
    for family in range(len(cell)):
        cell[family] += 1
    waypoint = WaypointMetrics()
    waypoint.observe_request(
        ("k",),
        lambda: dict.fromkeys(HTTP_LABELS, "x"),
        duration_ms=3.0,
        request_bytes=10,
        response_bytes=20,
    )
    for registry in (ztunnel.registry, waypoint.registry):
        text = generate_latest(registry).decode()
        assert "istio_" in text
        assert "_created" not in text, text
