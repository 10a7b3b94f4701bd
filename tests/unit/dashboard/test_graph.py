"""The dashboard's graph from metric increases: hops, figures, mTLS, layout."""

from __future__ import annotations

from typing import Any

import pytest

from ambient.dashboard.graph import build_graph, histogram_quantile, layout
from ambient.dashboard.samples import Increase, SeriesKey

WAYPOINT_TARGET = {
    "namespace": "shop",
    "pod": "waypoint-abc",
    "gateway_networking_k8s_io_gateway_name": "waypoint",
}
ZTUNNEL_TARGET = {"app": "ztunnel", "namespace": "ambient-system", "pod": "ztunnel-node-1"}


def key(name: str, **labels: str) -> SeriesKey:
    return (name, frozenset(labels.items()))


def http(dst: str, code: str = "200", src: str = "web", **more: str) -> dict[str, str]:
    return {
        "reporter": "waypoint",
        "source_workload": src,
        "source_workload_namespace": "shop",
        "destination_workload": dst,
        "destination_workload_namespace": "shop",
        "destination_service": "orders.shop.svc.cluster.local",
        "response_code": code,
        "connection_security_policy": "mutual_tls",
        **more,
    }


def tcp(src: str, dst: str, reporter: str, security: str = "mutual_tls") -> dict[str, str]:
    return {
        "reporter": reporter,
        "source_workload": src,
        "source_workload_namespace": "shop",
        "destination_workload": dst,
        "destination_workload_namespace": "shop",
        "destination_service": "unknown",
        "connection_security_policy": security,
    }


def buckets(labels: dict[str, str], counts: dict[str, float]) -> dict[SeriesKey, float]:
    name = "istio_request_duration_milliseconds_bucket"
    return {key(name, **labels, le=le): v for le, v in counts.items()}


def edges(graph: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["source"], e["target"]): e for e in graph["edges"]}


def test_a_request_through_a_waypoint_is_two_hops_with_the_split() -> None:
    v1, v2, v2_error = http("orders-v1"), http("orders-v2"), http("orders-v2", code="503")
    values = {
        key("istio_requests_total", **v1): 81.0,
        key("istio_requests_total", **v2): 8.0,
        key("istio_requests_total", **v2_error): 1.0,
        **buckets(v1, {"5": 0, "10": 40, "25": 81, "+Inf": 81}),
        **buckets(v2, {"5": 8, "10": 8, "25": 8, "+Inf": 8}),
    }
    graph = build_graph([Increase(WAYPOINT_TARGET, 10.0, values)], {})
    found = edges(graph)
    assert set(found) == {
        ("shop/web", "shop/waypoint"),
        ("shop/waypoint", "shop/orders-v1"),
        ("shop/waypoint", "shop/orders-v2"),
    }
    into = found[("shop/web", "shop/waypoint")]["http"]
    assert into["rps"] == pytest.approx(9.0)
    assert into["share"] == 1.0
    assert into["error_rate"] == pytest.approx(1 / 90)
    to_v1 = found[("shop/waypoint", "shop/orders-v1")]
    assert to_v1["http"]["share"] == pytest.approx(0.9)
    assert to_v1["http"]["error_rate"] == 0
    assert to_v1["http"]["p99_ms"] == pytest.approx(10 + 15 * (0.99 * 81 - 40) / 41)
    assert to_v1["waypoint"] is True
    assert to_v1["mtls"] == "mutual_tls"
    assert to_v1["services"] == ["orders.shop.svc.cluster.local"]
    assert found[("shop/waypoint", "shop/orders-v2")]["http"]["share"] == pytest.approx(0.1)
    assert found[("shop/waypoint", "shop/orders-v2")]["http"]["error_rate"] == pytest.approx(1 / 9)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["shop/waypoint"]["kind"] == "waypoint"
    assert nodes["shop/web"]["kind"] == "workload"


def test_tcp_hops_take_the_source_report_and_say_whether_they_are_mtls() -> None:
    opened = "istio_tcp_connections_opened_total"
    sent = "istio_tcp_sent_bytes_total"
    received = "istio_tcp_received_bytes_total"
    by_source = tcp("web", "db", "source")
    by_destination = tcp("web", "db", "destination")
    plain_source = tcp("probe", "db", "destination", security="unknown")
    values = {
        key(opened, **by_source): 4.0,
        key(sent, **by_source): 1000.0,
        key(received, **by_source): 1000.0,
        key(opened, **by_destination): 5.0,  # counted by both ztunnels: the source's wins
        key(opened, **plain_source): 2.0,
    }
    found = edges(build_graph([Increase(ZTUNNEL_TARGET, 2.0, values)], {}))
    web = found[("shop/web", "shop/db")]
    assert web["http"] is None
    assert web["tcp"] == {"cps": 2.0, "bytes_per_s": 1000.0}
    assert web["mtls"] == "mutual_tls"
    assert web["waypoint"] is False
    assert found[("shop/probe", "shop/db")]["mtls"] == "none"


def test_mixed_security_is_partial_and_unknown_callers_are_one_node() -> None:
    opened = "istio_tcp_connections_opened_total"
    values = {
        key(opened, **tcp("web", "db", "source")): 1.0,
        key(opened, **tcp("web", "db", "source", security="unknown")): 1.0,
        key(opened, **{**tcp("x", "db", "destination"), "source_workload": "unknown"}): 1.0,
    }
    graph = build_graph([Increase(ZTUNNEL_TARGET, 1.0, values)], {})
    found = edges(graph)
    assert found[("shop/web", "shop/db")]["mtls"] == "partial"
    assert ("unknown", "shop/db") in found
    assert {n["id"]: n["kind"] for n in graph["nodes"]}["unknown"] == "unknown"


def test_inventory_workloads_without_traffic_are_idle_nodes() -> None:
    inventory = {"shop/probe": {"namespace": "shop", "name": "probe", "identities": ["x"]}}
    graph = build_graph([], inventory)
    assert graph["edges"] == []
    assert graph["nodes"] == [
        {
            "id": "shop/probe",
            "namespace": "shop",
            "name": "probe",
            "identities": ["x"],
            "kind": "workload",
            "idle": True,
            "x": 0,
            "y": 0,
        }
    ]


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, {1.0: 0, 2.0: 10, float("inf"): 10}, 1.5),
        (0.99, {1.0: 0, 2.0: 10, float("inf"): 10}, 1.99),
        (0.99, {1.0: 5, float("inf"): 10}, 1.0),  # in the open bucket: its lower bound
        (0.5, {1.0: 10, float("inf"): 10}, 0.5),  # the first bucket starts at 0
        (0.5, {1.0: 0, float("inf"): 0}, None),  # no observations
        (0.5, {1.0: 3}, None),  # no +Inf bucket
    ],
)
def test_histogram_quantile_as_prometheus(
    q: float, counts: dict[float, float], expected: float | None
) -> None:
    assert histogram_quantile(q, counts) == (
        expected if expected is None else pytest.approx(expected)
    )


def test_layout_puts_each_node_one_column_past_its_furthest_caller() -> None:
    positions = layout(
        ["a", "b", "c", "d", "idle"], [("a", "b"), ("b", "c"), ("a", "c"), ("d", "c")]
    )
    assert {n: x for n, (x, _y) in positions.items() if n != "idle"} == {
        "a": 0,
        "b": 1,
        "c": 2,
        "d": 0,
    }
    assert positions["idle"][1] > max(y for n, (_x, y) in positions.items() if n != "idle")
    assert len(set(positions.values())) == len(positions)


def test_layout_cuts_a_cycle_where_it_closes() -> None:
    """Callers outside the mesh call web, which calls orders, which calls web back."""
    positions = layout(
        ["unknown", "web", "orders", "db"],
        [("unknown", "web"), ("web", "orders"), ("orders", "web"), ("orders", "db")],
    )
    assert {n: x for n, (x, _y) in positions.items()} == {
        "unknown": 0,
        "web": 1,
        "orders": 2,
        "db": 3,
    }


def test_idle_nodes_wrap_in_rows() -> None:
    positions = layout([f"n{i}" for i in range(7)], [])
    assert positions["n0"] == (0, 0)
    assert positions["n5"] == (0, 1)


def test_services_are_boxes_around_their_workloads_placed_together() -> None:
    def node(name: str, *services: str) -> dict[str, Any]:
        return {"namespace": "shop", "name": name, "services": list(services)}

    orders = "orders.shop.svc.cluster.local"
    inventory = {
        "shop/orders-v1": node("orders-v1", orders),
        "shop/aaa": node("aaa", "aaa.shop.svc.cluster.local"),
        "shop/orders-v2": node("orders-v2", orders, "zz.shop.svc.cluster.local"),
        "shop/web": node("web"),
    }
    services: dict[str, dict[str, Any]] = {
        orders: {"id": orders, "name": "orders", "namespace": "shop", "vips": [], "waypoint": None},
        "unused.shop.svc.cluster.local": {"id": "unused.shop.svc.cluster.local", "name": "unused"},
    }
    graph = build_graph([], inventory, services)
    assert graph["services"] == [
        {**services[orders], "members": ["shop/orders-v1", "shop/orders-v2"]}
    ]
    rows = {n["id"]: (n["x"], n["y"]) for n in graph["nodes"]}
    # The two orders workloads are side by side, not split by another service's workload.
    assert abs(rows["shop/orders-v1"][0] - rows["shop/orders-v2"][0]) == 1
    assert rows["shop/orders-v1"][1] == rows["shop/orders-v2"][1]
