"""The L7 objects waypoints enforce, in the control plane's index: ``MeshSnapshot.l7_manifests``
and the ``Delta``'s ``l7_upserted``/``l7_removed``, computed from what each change touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambient.config import ConfigSet, load_text
from ambient.config.configset import Ref
from ambient.config.l7objects import waypoint_manifests
from ambient.controlplane import ControlPlane
from ambient.controlplane.snapshot import Delta
from ambient.identity import CertificateAuthority

ROOT = Path(__file__).resolve().parents[3]
SHOP = (ROOT / "examples/shop/shop.yaml").read_text()
L7 = (ROOT / "examples/waypoint/l7.yaml").read_text()
ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
"""
POLICY = "AuthorizationPolicy/shop/orders-l7"


def config(*extra: str, l7: str = L7) -> ConfigSet:
    return load_text("\n---\n".join([SHOP, l7, *extra]), "shop.yaml")


@pytest.fixture
def plane() -> ControlPlane:
    return ControlPlane(CertificateAuthority.generate(), config=config())


def only_l7(delta: Delta) -> bool:
    return not (
        delta.upserted or delta.removed or delta.policies_upserted or delta.policies_removed
    )


def test_snapshot_holds_every_l7_object(plane: ControlPlane) -> None:
    manifests = plane.snapshot.l7_manifests
    assert sorted(manifests) == [
        POLICY,
        "DestinationRule/shop/orders",
        "VirtualService/shop/orders",
    ]
    assert json.loads(manifests["DestinationRule/shop/orders"])["spec"]["host"] == (
        "orders.shop.svc.cluster.local"
    )
    full = plane.full_state()
    assert [name for name, _ in full.l7_upserted] == sorted(manifests)


def test_an_edit_is_one_l7_upsert_and_a_version(plane: ControlPlane) -> None:
    version = plane.version
    delta = plane.update(config(l7=L7.replace("weight: 90", "weight: 0")))
    assert delta and only_l7(delta) and plane.version == version + 1
    assert [name for name, _ in delta.l7_upserted] == ["VirtualService/shop/orders"]
    assert '"weight":0' in dict(delta.l7_upserted)["VirtualService/shop/orders"]
    # the same content re-read (new objects, equal): nothing to push
    assert not plane.update(config(l7=L7.replace("weight: 90", "weight: 0")))


def test_add_and_remove(plane: ControlPlane) -> None:
    delta = plane.update(config(ROUTE))
    assert [name for name, _ in delta.l7_upserted] == ["HTTPRoute/shop/web-route"]
    delta = plane.update(config())
    assert delta.l7_removed == ("HTTPRoute/shop/web-route",) and not delta.l7_upserted


def test_a_policy_leaving_targetrefs_is_no_longer_sent(plane: ControlPlane) -> None:
    selector = L7.replace(
        '  targetRefs:\n  - kind: Service\n    group: ""\n    name: orders\n',
        "  selector: {matchLabels: {app: orders}}\n",
    )
    assert selector != L7
    delta = plane.update(config(l7=selector))
    assert delta.l7_removed == (POLICY,)
    assert [p.key for p in delta.policies_upserted] == ["shop/orders-l7"]  # now an L4 policy
    delta = plane.update(config())
    assert [name for name, _ in delta.l7_upserted] == [POLICY]


def test_incremental_equals_a_fresh_build(plane: ControlPlane) -> None:
    steps = [
        config(ROUTE),
        config(ROUTE, l7=L7.replace("weight: 90", "weight: 50")),
        ConfigSet(
            {r: o for r, o in config(ROUTE).objects.items() if r.kind != "DestinationRule"},
            config(ROUTE).origins,
        ),
    ]
    for step in steps:
        plane.update(step)
        fresh = ControlPlane(CertificateAuthority.generate(), config=step)
        assert dict(plane.snapshot.l7_manifests) == dict(fresh.snapshot.l7_manifests)
        assert dict(plane.snapshot.l7_manifests) == waypoint_manifests(step)
    assert Ref("DestinationRule", "shop", "orders") not in plane.config.objects


GRPC_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web-grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{method: {service: shop.Web}, headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web, port: 8080}]
"""


def test_a_grpcroute_is_delivered_like_an_httproute(plane: ControlPlane) -> None:
    """GRPCRoute travels to waypoints as a WaypointResource of its own, validated again there."""
    delta = plane.update(config(GRPC_ROUTE))
    assert delta and only_l7(delta)
    assert [name for name, _ in delta.l7_upserted] == ["GRPCRoute/shop/web-grpc"]
    manifest = json.loads(dict(delta.l7_upserted)["GRPCRoute/shop/web-grpc"])
    assert manifest["spec"]["rules"][0]["matches"][0]["method"] == {"service": "shop.Web"}
    reloaded = load_text(json.dumps(manifest), "xds.json")
    assert [o.kind for o in reloaded] == ["GRPCRoute"]
    assert plane.update(config()).l7_removed == ("GRPCRoute/shop/web-grpc",)
