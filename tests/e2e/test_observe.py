"""Observing examples/shop with its waypoint: a stock Prometheus (Debian's) configured by
``ambient prometheus-config``, queried with PromQL after traffic.

The mesh runs examples/shop + examples/waypoint/l7.yaml (the 90/10 canary) with the
namespace bound to the waypoint, in the default process model (control plane and ztunnels
as processes; the waypoint hosted by a ztunnel process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Mesh, wait_for
from tests.e2e.prometheusrun import Prometheus, running_prometheus
from tests.e2e.test_waypoint import shop_with_waypoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a mesh, traffic and Prometheus

ORDERS = "orders.shop.svc.cluster.local"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from shop_with_waypoint(tmp_path_factory.mktemp("observe"))


@pytest.fixture(scope="module")
def prometheus(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    mesh.ok("prometheus-config", "--scrape-interval", "1s", "-o", str(config))
    with running_prometheus(config, folder) as running:
        yield running


def values(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


def test_prometheus_finds_the_control_plane_every_ztunnel_and_the_waypoint(
    prometheus: Prometheus,
) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = prometheus.targets()
        return targets if len(targets) == 4 and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("4 targets up", all_up, timeout=30, every=0.5)
    labels = sorted(
        (t["labels"].get("app", ""), t["labels"]["pod"], t["labels"].get("node", ""))
        for t in targets
    )
    assert [label[:1] + label[2:] for label in labels] == [
        ("", "node-1"),  # the waypoint pod: its own labels, no app
        ("istiod", ""),
        ("ztunnel", "node-1"),
        ("ztunnel", "node-2"),
    ]
    assert {t["labels"]["job"] for t in targets} == {"kubernetes-pods"}
    assert {t["scrapeUrl"].rpartition(":")[2] for t in targets} >= {
        "15020/metrics",
        "15020/stats/prometheus",
        "15014/metrics",
    }
    # The control plane's own metrics: two ztunnels on xDS, certificates issued.
    connected = prometheus.query('pilot_xds{app="istiod"}')
    assert [float(r["value"][1]) for r in connected] == [2.0]
    assert prometheus.query("citadel_server_success_cert_issuance_count > 0")


def test_istio_requests_total_as_istio_labels_it(mesh: Mesh, prometheus: Prometheus) -> None:
    answers, failures = mesh.curl_many("http://orders:8080/api/health", 60)
    assert not failures, failures
    seen = {a["version"] for a in answers}
    query = (
        'sum by (destination_workload) (istio_requests_total{reporter="waypoint",'
        f'source_workload="web",destination_service="{ORDERS}",response_code="200",'
        'connection_security_policy="mutual_tls"})'
    )

    def counted() -> dict[str, float] | None:
        found = values(prometheus.query(query), "destination_workload")
        return found if sum(found.values()) >= 60 else None

    found = wait_for("60 requests in Prometheus", counted, timeout=30, every=0.5)
    assert set(found) == {f"orders-{v}" for v in seen}
    assert found["orders-v1"] > found.get("orders-v2", 0)  # the 90/10 split
    (series, *_) = prometheus.query(f'istio_requests_total{{destination_service="{ORDERS}"}}')
    labels = series["metric"]
    assert labels["namespace"] == "shop" and labels["pod"].startswith("waypoint-")
    assert labels["source_workload_namespace"] == "shop"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/shop/sa/web"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/shop/sa/orders"
    assert labels["request_protocol"] == "http"
    p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le) "
        '(rate(istio_request_duration_milliseconds_bucket{reporter="waypoint"}[1m])))'
    )
    assert p99 and float(p99[0]["value"][1]) > 0


def test_istio_tcp_metrics_of_both_ztunnels(mesh: Mesh, prometheus: Prometheus) -> None:
    mesh.curl_many("http://orders:8080/api/health", 10)
    query = (
        "sum by (reporter, node) (istio_tcp_connections_opened_total"
        '{app="ztunnel",connection_security_policy="mutual_tls"})'
    )

    def both() -> list[dict[str, Any]] | None:
        result = prometheus.query(query)
        reporters = {r["metric"]["reporter"] for r in result}
        return result if reporters == {"source", "destination"} else None

    result = wait_for("source and destination reports", both, timeout=30, every=0.5)
    assert {r["metric"]["node"] for r in result} == {"node-1", "node-2"}
    # Bytes are counted when a connection closes (as ztunnel does): web's from its curls.
    wait_for(
        "bytes web sent, as its ztunnel counted them",
        lambda: prometheus.query(
            'istio_tcp_received_bytes_total{reporter="source",source_workload="web"} > 0'
        ),
        timeout=30,
        every=0.5,
    )


def test_no_created_series(prometheus: Prometheus) -> None:
    wait_for("series scraped", lambda: prometheus.query("istio_tcp_connections_opened_total"))
    assert prometheus.query('count({__name__=~".+_created"})') == []
    assert prometheus.query('count({__name__=~".+_created_total"})') == []


def test_a_new_node_is_scraped_without_changing_prometheus(
    mesh: Mesh, prometheus: Prometheus, tmp_path: Path
) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: shop, labels: {app: extra}}\n"
        "spec:\n  nodeName: node-3\n  serviceAccountName: probe\n  containers:\n"
        '  - name: extra\n    command: [python3, -c, "import signal; signal.pause()"]\n'
    )
    mesh.ok("apply", "-f", str(pod))
    try:

        def node3_up() -> bool:
            return any(
                t["labels"].get("node") == "node-3" and t["health"] == "up"
                for t in prometheus.targets()
            )

        wait_for("node-3's ztunnel scraped", node3_up, timeout=60, every=0.5)
    finally:
        mesh.ok("delete", "-f", str(pod))
