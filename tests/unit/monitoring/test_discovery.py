"""Prometheus discovery of a folder-mode mesh: what ``/prometheus/sd`` lists, served over
HTTP, following the index (a waypoint added to the mesh appears at the next request)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from ambient.config import Pod, load_text
from ambient.config.configset import Ref
from ambient.controlplane import ControlPlane
from ambient.identity import CertificateAuthority
from ambient.monitoring.discovery import prometheus_label, scrape_targets
from ambient.monitoring.metrics import ControlPlaneMetrics
from ambient.monitoring.server import MonitoringServer
from tests.unit.controlplane.test_cluster_index import _pod

ROOT = Path(__file__).resolve().parents[3]
SHOP = (ROOT / "examples/shop/shop.yaml").read_text()
L7 = (ROOT / "examples/waypoint/l7.yaml").read_text()


def plane(*texts: str) -> ControlPlane:
    return ControlPlane(
        CertificateAuthority.generate(), config=load_text("\n---\n".join(texts), "x.yaml")
    )


def test_label_names_are_spelled_as_prometheus_kubernetes_discovery_does() -> None:
    assert prometheus_label("gateway.networking.k8s.io/gateway-name") == (
        "gateway_networking_k8s_io_gateway_name"
    )
    assert prometheus_label("app") == "app"


def test_a_waypoint_pod_is_listed_with_its_labels_and_envoys_path() -> None:
    mesh = plane(SHOP, L7)
    groups = scrape_targets(mesh.snapshot)
    assert [g["labels"]["pod"] for g in groups[:2]] == ["ztunnel-node-1", "ztunnel-node-2"]
    (waypoint,) = groups[2:]
    pod = next(w for w in mesh.snapshot.workloads.values() if w.workload_name == "waypoint")
    assert waypoint == {
        "targets": [f"{pod.addresses[0]}:15020"],
        "labels": {
            "gateway_networking_k8s_io_gateway_name": "waypoint",
            "istio_io_dataplane_mode": "none",
            "pod_template_hash": pod.labels["pod-template-hash"],
            "namespace": "shop",
            "pod": pod.name,
            "node": pod.node,
            "__metrics_path__": "/stats/prometheus",
        },
    }


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


async def test_a_waypoint_applied_later_appears_in_the_served_list() -> None:
    mesh = plane(SHOP)
    server = MonitoringServer(mesh, ControlPlaneMetrics())
    address = await server.start("127.0.0.1:0")
    try:
        url = f"http://{address}/prometheus/sd"
        before = await asyncio.to_thread(_get, url)
        assert isinstance(before, list)
        assert [g["labels"]["pod"] for g in before] == [
            "controlplane",
            "ztunnel-node-1",
            "ztunnel-node-2",
        ]
        assert before[0]["targets"] == [address]
        mesh.update(load_text(SHOP + "\n---\n" + L7, "x.yaml"))
        after = await asyncio.to_thread(_get, url)
        assert isinstance(after, list)
        assert [g["labels"].get("gateway_networking_k8s_io_gateway_name") for g in after] == [
            None,
            None,
            None,
            "waypoint",
        ]
    finally:
        await server.close()


def test_on_a_cluster_a_ztunnel_is_scraped_at_its_pod_ip() -> None:
    cluster = ControlPlane(CertificateAuthority.generate(), cluster=True)
    ztunnel = _pod("ztunnel-x7k2p", "istio-system", "ztunnel", "10.244.1.7", host="192.168.0.7")
    other = _pod("ztunnel", "shop", "ztunnel", "10.244.1.8", host="192.168.0.7")  # not a system pod
    pods: list[Pod] = [ztunnel, other]
    cluster.apply_changes({Ref.of(p): (p, None) for p in pods})
    assert {str(ip) for ip in cluster.snapshot.nodes.values()} == {"192.168.0.7"}
    assert scrape_targets(cluster.snapshot, cluster=True) == [
        {
            "targets": ["10.244.1.7:15020"],
            "labels": {
                "app": "ztunnel",
                "namespace": "istio-system",
                "pod": "ztunnel-x7k2p",
                "node": "node-1",
                "__metrics_path__": "/metrics",
            },
        }
    ]
    # a folder's ztunnel is its node's process, at the node's address
    assert scrape_targets(cluster.snapshot)[0]["targets"] == ["192.168.0.7:15020"]
