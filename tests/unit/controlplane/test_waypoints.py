"""Waypoint Gateways: the objects they stand for, istio.io/use-waypoint binding, status."""

from __future__ import annotations

import dataclasses
from typing import cast

import pytest

from ambient.config import ConfigError, load_text
from ambient.controlplane.waypoints import gateway_status, waypoint_gateways, waypoint_of
from ambient.state.workload import GatewayAddress, TunnelProtocol, WorkloadStatus
from tests.unit.controlplane.manifests import pod, snapshot

WAYPOINT = GatewayAddress("shop/waypoint.shop.svc.cluster.local")
OTHER_NS_WAYPOINT = GatewayAddress("infra/wp.infra.svc.cluster.local")


def gateway(
    name: str = "waypoint", ns: str = "shop", traffic: str | None = None, **ann: str
) -> str:
    labels = f"labels: {{istio.io/waypoint-for: {traffic}}}" if traffic else ""
    annotations = (
        "annotations: {" + ", ".join(f'"{k}": "{v}"' for k, v in ann.items()) + "}" if ann else ""
    )
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {ns}
  {labels}
  {annotations}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
"""


def namespace(name: str, **labels: str) -> str:
    body = ", ".join(
        f'"{k}": "{v}"' for k, v in {"istio.io/dataplane-mode": "ambient", **labels}.items()
    )
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{body}}}\n"


def service(name: str, ns: str = "shop", **labels: str) -> str:
    body = ", ".join(f'"{k}": "{v}"' for k, v in labels.items())
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}, labels: {{{body}}}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 8080}}]
"""


def test_gateway_becomes_deployment_service_and_account() -> None:
    snap = snapshot(namespace("shop"), gateway(**{"ambient.io/replicas": "2"}))
    pods = [w for w in snap.workloads.values() if waypoint_of(w) == "waypoint"]
    assert len(pods) == 2
    assert all(w.identity.uri == "spiffe://cluster.local/ns/shop/sa/waypoint" for w in pods)
    # a waypoint speaks HBONE itself, even though its pods opt out of capture
    assert all(w.tunnel_protocol is TunnelProtocol.HBONE and w.waypoint is None for w in pods)
    svc = snap.services["shop/waypoint.shop.svc.cluster.local"]
    assert {p.service_port for p in svc.ports} == {15008, 15021}
    assert {w.uid for w in snap.endpoints(svc)} == {w.uid for w in pods}
    assert svc.waypoint is None


@pytest.mark.parametrize(
    ("ns_labels", "svc_labels", "traffic", "expected"),
    [
        ({}, {}, None, None),
        ({"istio.io/use-waypoint": "waypoint"}, {}, None, WAYPOINT),  # namespace binding
        ({}, {"istio.io/use-waypoint": "waypoint"}, None, WAYPOINT),  # service binding
        ({"istio.io/use-waypoint": "waypoint"}, {"istio.io/use-waypoint": "none"}, None, None),
        ({}, {"istio.io/use-waypoint": "waypoint"}, "service", WAYPOINT),
        ({}, {"istio.io/use-waypoint": "waypoint"}, "all", WAYPOINT),
        ({}, {"istio.io/use-waypoint": "waypoint"}, "workload", None),  # not for services
        ({}, {"istio.io/use-waypoint": "waypoint"}, "none", None),
        ({}, {"istio.io/use-waypoint": "missing"}, None, None),  # unknown waypoint: direct
    ],
)
def test_service_binding(
    ns_labels: dict[str, str],
    svc_labels: dict[str, str],
    traffic: str | None,
    expected: GatewayAddress | None,
) -> None:
    snap = snapshot(
        namespace("shop", **ns_labels), gateway(traffic=traffic), service("orders", **svc_labels)
    )
    assert snap.services["shop/orders.shop.svc.cluster.local"].waypoint == expected
    # the waypoint's own service never gets a waypoint
    assert snap.services["shop/waypoint.shop.svc.cluster.local"].waypoint is None


def test_binding_to_another_namespace_and_warnings() -> None:
    snap = snapshot(
        namespace("shop"),
        namespace("infra"),
        gateway("wp", "infra"),
        service(
            "orders",
            **{"istio.io/use-waypoint": "wp", "istio.io/use-waypoint-namespace": "infra"},
        ),
        service("cart", **{"istio.io/use-waypoint": "missing"}),
    )
    assert snap.services["shop/orders.shop.svc.cluster.local"].waypoint == OTHER_NS_WAYPOINT
    assert snap.services["shop/cart.shop.svc.cluster.local"].waypoint is None
    assert any("waypoint shop/missing does not exist" in w for w in snap.warnings)


@pytest.mark.parametrize(
    ("traffic", "pod_labels", "expected"),
    [
        ("workload", "{istio.io/use-waypoint: waypoint}", WAYPOINT),
        ("all", "{istio.io/use-waypoint: waypoint}", WAYPOINT),
        ("service", "{istio.io/use-waypoint: waypoint}", None),  # a service waypoint
        ("workload", "{}", None),
    ],
)
def test_workload_binding(traffic: str, pod_labels: str, expected: GatewayAddress | None) -> None:
    snap = snapshot(
        namespace("shop"), gateway(traffic=traffic), pod("app", "shop", labels=pod_labels)
    )
    assert snap.workloads["Kubernetes//Pod/shop/app"].waypoint == expected


def test_waypoint_pods_never_use_a_waypoint() -> None:
    snap = snapshot(
        namespace("shop", **{"istio.io/use-waypoint": "waypoint"}), gateway(traffic="all")
    )
    assert all(w.waypoint is None for w in snap.workloads.values() if waypoint_of(w))


def test_status_programmed_once_a_replica_is_healthy() -> None:
    config = load_text(namespace("shop") + "---\n" + gateway(), "gw.yaml")
    snap = snapshot(namespace("shop"), gateway())
    (gw,) = waypoint_gateways(config)
    status = gateway_status(gw, snap.workloads, snap.services)
    assert status.programmed and status.addresses
    listed = cast("list[dict[str, str]]", status.to_dict()["conditions"])
    conditions = {c["type"]: c["status"] for c in listed}
    assert conditions == {"Accepted": "True", "Programmed": "True"}
    unhealthy = {
        uid: dataclasses.replace(w, status=WorkloadStatus.UNHEALTHY)
        for uid, w in snap.workloads.items()
    }
    assert not gateway_status(gw, unhealthy, snap.services).programmed


@pytest.mark.parametrize(
    ("listener", "problem"),
    [
        ("{name: mesh, port: 15009, protocol: HBONE}", "must use port 15008"),
        ("{name: http, port: 80, protocol: HTTP}", "needs an HBONE listener"),
        ("{name: mesh, port: 15008, protocol: QUIC}", "protocol"),
    ],
)
def test_bad_waypoint_gateways_are_refused(listener: str, problem: str) -> None:
    text = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: shop}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{listener}]
"""
    with pytest.raises(ConfigError, match=problem):
        load_text(text, "gw.yaml")
