"""Status and waypoint objects written by the controller, as istiod writes them.

A waypoint Gateway gets its ServiceAccount, Deployment and Service (owned by it,
garbage-collected with it); ``Programmed`` turns True once a waypoint pod is a ready
workload and False when its pods are gone. Routes attached to a Service or a waypoint
get their parent status. The ReplicaSet controller and the scheduler of the dev cluster
make and bind the waypoint's pods; the kubelet stand-in reports them running.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ambient.cli.waypoint import waypoint_manifest
from ambient.kube.api import KubeClient, NotFound
from ambient.kube.heartbeat import LEASE_NAME, STATUS_ANNOTATION
from ambient.kube.kinds import (
    DEPLOYMENT,
    GATEWAY,
    GRPCROUTE,
    HTTPROUTE,
    LEASE,
    POD,
    SERVICE,
    by_kind,
)
from tests.kube.controlplane.conftest import RunningPlane
from tests.kube.controlplane.test_watch import create, service
from tests.kube.kubelet import KubeletStandIn, watch_objects, watch_until

pytestmark = [pytest.mark.slow, pytest.mark.kube]


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def programmed(value: str) -> Any:
    def check(gateway: dict[str, Any] | None) -> Any:
        found = condition(gateway, "Programmed")
        return (
            found
            if found and found["status"] == value and found.get("reason") != "Pending"
            else None
        )

    return check


async def test_waypoint_objects_and_programmed(
    controlplane: RunningPlane, admin: KubeClient, kubelet: KubeletStandIn, namespace: str
) -> None:
    await kubelet.register("node-w", "192.168.70.1")
    kubelet.heartbeats()
    await create(admin, waypoint_manifest(namespace, "waypoint", "service"))
    gateway = await admin.get(GATEWAY.path(namespace, "waypoint"))
    uid = gateway["metadata"]["uid"]
    owner = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": "waypoint",
        "uid": uid,
    }

    # The controller creates the waypoint's objects, owned by the Gateway.
    for info in (by_kind("ServiceAccount"), DEPLOYMENT, SERVICE):
        obj = await watch_until(
            admin, info, namespace, "waypoint", lambda o: o, what=f"the {info.kind}"
        )
        assert obj["metadata"]["ownerReferences"] == [owner], info.kind
        labels = obj["metadata"]["labels"]
        assert labels["gateway.networking.k8s.io/gateway-name"] == "waypoint"
        assert labels["gateway.networking.k8s.io/gateway-class-name"] == "istio-waypoint"
    svc = await admin.get(SERVICE.path(namespace, "waypoint"))
    assert {(p["name"], p["port"], p.get("appProtocol")) for p in svc["spec"]["ports"]} == {
        ("status-port", 15021, "tcp"),
        ("mesh", 15008, "hbone"),
    }
    deployment = await admin.get(DEPLOYMENT.path(namespace, "waypoint"))
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    assert template["metadata"]["labels"]["gateway.istio.io/managed"] == "istio.io-mesh-controller"
    assert template["spec"]["serviceAccountName"] == "waypoint"
    assert template["spec"]["containers"][0]["command"] == ["ambient", "waypoint", "hosted"]

    # Accepted, but not programmed: no waypoint pod is ready yet.
    not_yet = await watch_until(
        admin, GATEWAY, namespace, "waypoint", programmed("False"), what="Programmed=False"
    )
    assert not_yet["reason"] in ("NoResources", "AddressNotUsable")
    accepted = condition(await admin.get(GATEWAY.path(namespace, "waypoint")), "Accepted")
    assert accepted is not None and accepted["status"] == "True"

    # The ReplicaSet makes a pod; the kubelet stand-in reports it running and ready.
    pods = await watch_objects(
        admin,
        POD,
        namespace,
        lambda objects: list(objects) or None,
        label_selector="gateway.networking.k8s.io/gateway-name=waypoint",
        what="the waypoint's pod",
    )
    await kubelet.run(namespace, pods[0], "10.244.70.5", node="node-w")
    done = await watch_until(
        admin, GATEWAY, namespace, "waypoint", programmed("True"), what="Programmed=True"
    )
    assert done["reason"] == "Programmed"
    status = (await admin.get(GATEWAY.path(namespace, "waypoint")))["status"]
    assert status["addresses"] == [{"type": "IPAddress", "value": svc["spec"]["clusterIP"]}]
    assert [item["name"] for item in status["listeners"]] == ["mesh"]

    # Its pods gone (scaled to zero): Programmed goes False.
    await admin.patch(DEPLOYMENT.path(namespace, "waypoint"), {"spec": {"replicas": 0}})
    await watch_until(
        admin, GATEWAY, namespace, "waypoint", programmed("False"), what="Programmed=False again"
    )
    for name in pods:
        await kubelet.delete(namespace, name)

    # Deleting the Gateway: Kubernetes' garbage collector deletes what it owns.
    await admin.delete(GATEWAY.path(namespace, "waypoint"))
    for info in (by_kind("ServiceAccount"), DEPLOYMENT, SERVICE):
        await watch_until(
            admin,
            info,
            namespace,
            "waypoint",
            lambda o: o is None,
            what=f"the {info.kind} collected",
        )


async def test_a_deleted_waypoint_service_comes_back(
    controlplane: RunningPlane, admin: KubeClient, namespace: str
) -> None:
    await create(admin, waypoint_manifest(namespace, "wp", "service"))
    first = await watch_until(admin, SERVICE, namespace, "wp", lambda o: o, what="the Service")
    await admin.delete(SERVICE.path(namespace, "wp"))
    again = await watch_until(
        admin,
        SERVICE,
        namespace,
        "wp",
        lambda o: o if o and o["metadata"]["uid"] != first["metadata"]["uid"] else None,
        what="the Service applied again",
    )
    assert again["metadata"]["ownerReferences"][0]["kind"] == "Gateway"


def parent(route: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    for entry in ((route or {}).get("status") or {}).get("parents") or []:
        if (
            entry["parentRef"].get("name") == name
            and entry["controllerName"] == "istio.io/gateway-controller"
        ):
            return {c["type"]: c for c in entry["conditions"]}
    return None


def route(
    kind: str, namespace: str, name: str, parents: list[dict[str, Any]], backend: str
) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": parents,
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}],
        },
    }


async def test_route_parent_status(
    controlplane: RunningPlane, admin: KubeClient, namespace: str
) -> None:
    await create(admin, service(namespace, "api", {"app": "api"}))
    svc_parent = {"group": "", "kind": "Service", "name": "api", "port": 80}
    await create(admin, route("HTTPRoute", namespace, "ok", [svc_parent], "api"))
    await create(
        admin,
        route(
            "HTTPRoute",
            namespace,
            "lost",
            [{"group": "", "kind": "Service", "name": "nope"}],
            "gone",
        ),
    )
    await create(admin, route("GRPCRoute", namespace, "rpc", [svc_parent], "api"))

    def conditions(name: str) -> Any:
        return lambda obj: parent(obj, name)

    ok = await watch_until(
        admin, HTTPROUTE, namespace, "ok", conditions("api"), what="HTTPRoute ok status"
    )
    assert (ok["Accepted"]["status"], ok["Accepted"]["reason"]) == ("True", "Accepted")
    assert (ok["ResolvedRefs"]["status"], ok["ResolvedRefs"]["reason"]) == ("True", "ResolvedRefs")
    assert "istio.io/use-waypoint label missing" in ok["ResolvedWaypoints"]["message"]
    lost = await watch_until(
        admin, HTTPROUTE, namespace, "lost", conditions("nope"), what="HTTPRoute lost status"
    )
    assert (lost["Accepted"]["status"], lost["Accepted"]["reason"]) == ("False", "NoMatchingParent")
    assert lost["Accepted"]["message"] == 'parent service: "nope" not found'
    assert (lost["ResolvedRefs"]["status"], lost["ResolvedRefs"]["reason"]) == (
        "False",
        "BackendNotFound",
    )
    assert (
        lost["ResolvedRefs"]["message"] == f"backend(gone.{namespace}.svc.cluster.local) not found"
    )
    rpc = await watch_until(
        admin, GRPCROUTE, namespace, "rpc", conditions("api"), what="GRPCRoute status"
    )
    assert rpc["Accepted"]["status"] == "True"

    # The Service appears: the route's status follows (the parent is found).
    await create(admin, service(namespace, "nope", {"app": "nope"}))
    await watch_until(
        admin,
        HTTPROUTE,
        namespace,
        "lost",
        lambda obj: (parent(obj, "nope") or {}).get("Accepted", {}).get("status") == "True",
        what="the parent found",
    )

    # A route attached to a waypoint counts in its listener's attachedRoutes.
    await create(admin, waypoint_manifest(namespace, "wp", "service"))
    await create(admin, route("HTTPRoute", namespace, "via-wp", [{"name": "wp"}], "api"))
    await watch_until(
        admin,
        GATEWAY,
        namespace,
        "wp",
        lambda gw: (
            [
                listener.get("attachedRoutes")
                for listener in ((gw or {}).get("status") or {}).get("listeners", [])
            ]
            == [1]
        ),
        what="attachedRoutes 1",
    )


async def test_status_is_written_only_when_it_changes(
    controlplane: RunningPlane, admin: KubeClient, namespace: str
) -> None:
    """Once a route's status is written, changes that do not alter it (here: Services
    elsewhere, which make the controller recompute every route) write nothing."""
    await create(admin, service(namespace, "api", {"app": "api"}))
    await create(
        admin,
        route(
            "HTTPRoute", namespace, "r", [{"group": "", "kind": "Service", "name": "api"}], "api"
        ),
    )
    await watch_until(
        admin, HTTPROUTE, namespace, "r", lambda obj: parent(obj, "api"), what="the route status"
    )

    first = await next_heartbeat(admin)
    route_version = (await admin.get(HTTPROUTE.path(namespace, "r")))["metadata"]["resourceVersion"]
    for n in range(3):
        await create(admin, service(namespace, f"other-{n}", {"app": f"o{n}"}))
    later = await next_heartbeat(admin, lambda status: status["batches"] > first["batches"])
    assert later["statusWrites"] == first["statusWrites"]
    assert (await admin.get(HTTPROUTE.path(namespace, "r")))["metadata"][
        "resourceVersion"
    ] == route_version


async def next_heartbeat(
    admin: KubeClient, check: Any = None, timeout: float = 40.0
) -> dict[str, Any]:
    """The control plane's status from its next heartbeat (one written from now on) that
    passes ``check``."""
    try:
        current = await admin.get(LEASE.path("istio-system", LEASE_NAME))
        version = current["metadata"]["resourceVersion"]
    except NotFound:
        version = None

    def fresh(lease: dict[str, Any] | None) -> Any:
        if lease is None or lease["metadata"]["resourceVersion"] == version:
            return None
        status = json.loads(lease["metadata"]["annotations"][STATUS_ANNOTATION])
        return status if check is None or check(status) else None

    found: dict[str, Any] = await watch_until(
        admin, LEASE, "istio-system", LEASE_NAME, fresh, timeout=timeout, what="a heartbeat"
    )
    return found
