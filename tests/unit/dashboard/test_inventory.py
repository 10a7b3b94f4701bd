"""Per workload: identity, pods, waypoint, and which policies and routes apply (Istio's rules)."""

from __future__ import annotations

from typing import Any

import yaml

from ambient.dashboard.inventory import build_inventory


def workload(
    name: str, deployment: str, sa: str, services: list[str], **more: Any
) -> dict[str, Any]:
    return {
        "uid": f"Kubernetes//Pod/shop/{name}",
        "name": name,
        "namespace": "shop",
        "workloadIps": ["127.10.0.1"],
        "serviceAccount": sa,
        "node": "node-1",
        "protocol": "HBONE",
        "workloadName": deployment,
        "canonicalName": deployment.split("-")[0],
        "canonicalRevision": "v1",
        "status": "Healthy",
        "waypoint": None,
        "services": {f"shop/{s}.shop.svc.cluster.local": [[8080, 8080]] for s in services},
        "trustDomain": "cluster.local",
        **more,
    }


DUMP = {
    "workloads": [
        workload("orders-1", "orders", "orders", ["orders"]),
        workload("orders-2", "orders", "orders", ["orders"], node="node-2"),
        workload("web-1", "web", "web", ["web"]),
        workload("waypoint-1", "waypoint", "waypoint", []),
    ],
    "services": [
        {
            "name": "orders",
            "namespace": "shop",
            "hostname": "orders.shop.svc.cluster.local",
            "waypoint": "shop/waypoint.shop.svc.cluster.local",
        },
        {"name": "web", "namespace": "shop", "hostname": "web.shop.svc.cluster.local"},
    ],
}

MANIFESTS = list(
    yaml.safe_load_all(
        """
kind: Deployment
metadata: {name: orders, namespace: shop}
spec: {template: {metadata: {labels: {app: orders, tier: back}}}}
---
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {template: {metadata: {labels: {app: web}}}}
---
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec: {gatewayClassName: istio-waypoint}
---
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
kind: AuthorizationPolicy
metadata: {name: back-only, namespace: shop}
spec: {selector: {matchLabels: {tier: back}}}
---
kind: AuthorizationPolicy
metadata: {name: other-namespace, namespace: elsewhere}
spec: {}
---
kind: AuthorizationPolicy
metadata: {name: orders-l7, namespace: shop}
spec: {targetRefs: [{kind: Service, group: "", name: orders}], action: ALLOW}
---
kind: AuthorizationPolicy
metadata: {name: at-the-waypoint, namespace: shop}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]}
---
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - route:
    - {destination: {host: orders, subset: v1}, weight: 90}
    - {destination: {host: orders, subset: v2}, weight: 10}
---
kind: HTTPRoute
metadata: {name: web-route, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: "", name: web}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
kind: VirtualService
metadata: {name: unrelated, namespace: shop}
spec: {hosts: [other.example.com]}
"""
    )
)


def names(items: list[dict[str, Any]]) -> list[str]:
    return [f"{i['kind']} {i['name']}" for i in items]


def test_workloads_group_their_pods_with_identity_and_waypoint() -> None:
    inventory = build_inventory([DUMP, DUMP], MANIFESTS)  # every node's dump: pods once
    assert sorted(inventory) == ["shop/orders", "shop/waypoint", "shop/web"]
    orders = inventory["shop/orders"]
    assert orders["identities"] == ["spiffe://cluster.local/ns/shop/sa/orders"]
    assert [(p["name"], p["node"]) for p in orders["pods"]] == [
        ("orders-1", "node-1"),
        ("orders-2", "node-2"),
    ]
    assert orders["waypoint"] == "shop/waypoint.shop.svc.cluster.local"
    assert orders["services"] == ["orders.shop.svc.cluster.local"]
    assert inventory["shop/web"]["waypoint"] is None
    assert inventory["shop/waypoint"]["kind"] == "waypoint"


def test_policies_apply_as_istio_decides() -> None:
    inventory = build_inventory([DUMP], MANIFESTS)
    orders = inventory["shop/orders"]["policies"]
    assert names(orders) == [
        "AuthorizationPolicy istio-system/mesh-wide",
        "PeerAuthentication shop/strict",
        "AuthorizationPolicy shop/back-only",
        "AuthorizationPolicy shop/orders-l7",
    ]
    assert [p["enforced_by"] for p in orders] == ["ztunnel", "ztunnel", "ztunnel", "waypoint"]
    assert [p["action"] for p in orders] == ["DENY", None, "ALLOW", "ALLOW"]
    assert names(inventory["shop/web"]["policies"]) == [
        "AuthorizationPolicy istio-system/mesh-wide",
        "PeerAuthentication shop/strict",
    ]
    assert "AuthorizationPolicy shop/at-the-waypoint" in names(
        inventory["shop/waypoint"]["policies"]
    )


def test_routes_name_their_destinations_and_weights() -> None:
    inventory = build_inventory([DUMP], MANIFESTS)
    assert inventory["shop/orders"]["routes"] == [
        {
            "kind": "VirtualService",
            "name": "shop/orders",
            "summary": "orders v1 90%, orders v2 10%",
        }
    ]
    assert inventory["shop/web"]["routes"] == [
        {"kind": "HTTPRoute", "name": "shop/web-route", "summary": "web"}
    ]
    assert inventory["shop/waypoint"]["routes"] == []


def test_odd_shapes_are_skipped_not_fatal() -> None:
    odd: list[dict[str, Any]] = [
        {"kind": "AuthorizationPolicy", "metadata": None, "spec": "x"},
        {"kind": "Deployment"},
    ]
    dump = {"workloads": [workload("a-1", "a", "a", [])], "services": None}
    inventory = build_inventory([dump], odd)
    assert list(inventory) == ["shop/a"]


def test_services_by_hostname() -> None:
    from ambient.dashboard.inventory import build_services

    services = build_services([DUMP, DUMP])
    assert services["orders.shop.svc.cluster.local"] == {
        "id": "orders.shop.svc.cluster.local",
        "name": "orders",
        "namespace": "shop",
        "vips": [],
        "waypoint": "shop/waypoint.shop.svc.cluster.local",
    }
    assert sorted(services) == ["orders.shop.svc.cluster.local", "web.shop.svc.cluster.local"]


def test_on_a_cluster_a_workloads_labels_are_its_pods() -> None:
    """A cluster's manifests hold the Deployment's pods, not the Deployment: selectors
    match the pods' labels."""
    pods = [
        {
            "kind": "Pod",
            "metadata": {"name": "orders-1", "namespace": "shop", "labels": {"tier": "back"}},
        },
        *(m for m in MANIFESTS if m["kind"] == "AuthorizationPolicy"),
    ]
    inventory = build_inventory([DUMP], pods)
    assert "AuthorizationPolicy shop/back-only" in names(inventory["shop/orders"]["policies"])
    assert "AuthorizationPolicy shop/back-only" not in names(inventory["shop/web"]["policies"])
