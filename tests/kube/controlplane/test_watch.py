"""Every watched kind: create, update and delete in the cluster reach a ztunnel's view.

The control plane runs as its own process with the ``istiod`` ServiceAccount's token;
the ztunnel is a real xDS client (``Subscriber``); pods get their IP and readiness
from the kubelet stand-in.
"""

from __future__ import annotations

from typing import Any

import pytest

from ambient.kube.api import KubeClient
from ambient.kube.kinds import NAMESPACE, POD, SERVICE, by_kind
from ambient.state.workload import TunnelProtocol, WorkloadStatus
from tests.kube.controlplane.conftest import RunningPlane, Subscriber
from tests.kube.kubelet import KubeletStandIn

pytestmark = [pytest.mark.slow, pytest.mark.kube]


def pod(
    namespace: str, name: str, labels: dict[str, str], node: str = "node-1", sa: str = "default"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "serviceAccountName": sa,
            "containers": [
                {"name": "app", "image": "app", "ports": [{"containerPort": 8080, "name": "http"}]}
            ],
        },
    }


def service(namespace: str, name: str, selector: dict[str, str], port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }


async def create(admin: KubeClient, body: dict[str, Any]) -> dict[str, Any]:
    info = by_kind(body["kind"])
    meta = body["metadata"]
    answer: dict[str, Any] = await admin.create(info.path(meta.get("namespace")), body)
    return answer


async def test_pods_services_and_namespaces(
    controlplane: RunningPlane, admin: KubeClient, kubelet: KubeletStandIn, namespace: str
) -> None:
    await kubelet.register("node-1", "192.168.50.1")
    async with Subscriber(controlplane, "node-1") as ztunnel:
        await create(admin, pod(namespace, "web", {"app": "web"}))
        await create(admin, service(namespace, "web", {"app": "web"}))
        # No IP yet: not a workload. The Service is there, with the API server's VIP.
        svc = await ztunnel.wait(lambda: ztunnel.service(namespace, "web"), what="the Service")
        cluster_ip = (await admin.get(SERVICE.path(namespace, "web")))["spec"]["clusterIP"]
        assert [str(a) for a in svc.addresses] == [cluster_ip]
        assert ztunnel.workload(namespace, "web") is None

        # The kubelet reports an IP, not ready yet: an unhealthy workload of the Service.
        await kubelet.run(namespace, "web", "10.244.1.10", ready=False)
        workload = await ztunnel.wait(lambda: ztunnel.workload(namespace, "web"), what="the pod")
        assert [str(a) for a in workload.addresses] == ["10.244.1.10"]
        assert workload.status is WorkloadStatus.UNHEALTHY
        assert workload.node == "node-1"
        assert list(workload.services) == [f"{namespace}/web.{namespace}.svc.cluster.local"]
        assert workload.tunnel_protocol is TunnelProtocol.NONE

        # Ready: healthy.
        await kubelet.set_status(namespace, "web", "10.244.1.10", ready=True, host="192.168.50.1")
        await ztunnel.wait(
            lambda: ztunnel.workload(namespace, "web").status is WorkloadStatus.HEALTHY,
            what="ready",
        )

        # The namespace enrols it in ambient mode.
        await admin.patch(
            NAMESPACE.path(None, namespace),
            {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}},
        )
        await ztunnel.wait(
            lambda: ztunnel.workload(namespace, "web").tunnel_protocol is TunnelProtocol.HBONE,
            what="HBONE after the namespace label",
        )

        # A relabelled pod leaves the Service.
        await admin.patch(POD.path(namespace, "web"), {"metadata": {"labels": {"app": "other"}}})
        await ztunnel.wait(lambda: not ztunnel.workload(namespace, "web").services, what="relabel")

        # A Service update (a port) and delete.
        await admin.patch(
            SERVICE.path(namespace, "web"),
            {"spec": {"ports": [{"name": "http", "port": 81, "targetPort": "http"}]}},
        )
        await ztunnel.wait(
            lambda: [p.service_port for p in ztunnel.service(namespace, "web").ports] == [81],
            what="port 81",
        )
        await admin.delete(SERVICE.path(namespace, "web"))
        await ztunnel.wait(lambda: ztunnel.service(namespace, "web") is None, what="service gone")

        # Deleting the pod: it is terminating (not ready) until the kubelet removes it.
        await admin.delete(POD.path(namespace, "web"))
        await ztunnel.wait(
            lambda: ztunnel.workload(namespace, "web").status is WorkloadStatus.UNHEALTHY,
            what="a terminating pod is unhealthy",
        )
        await kubelet.delete(namespace, "web")
        await ztunnel.wait(lambda: ztunnel.workload(namespace, "web") is None, what="pod gone")


_ISTIO = {
    "WorkloadEntry": {"address": "10.9.0.7", "labels": {"app": "vm"}, "serviceAccount": "vm"},
    "ServiceEntry": {
        "hosts": ["api.example.com"],
        "addresses": ["240.0.0.7"],
        "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
        "resolution": "STATIC",
        "location": "MESH_EXTERNAL",
    },
}


async def test_workload_entries_and_service_entries(
    controlplane: RunningPlane, admin: KubeClient, namespace: str
) -> None:
    async with Subscriber(controlplane, "node-2") as ztunnel:
        for kind, spec in _ISTIO.items():
            await create(
                admin,
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": kind,
                    "metadata": {"name": "x", "namespace": namespace},
                    "spec": spec,
                },
            )
        uid = f"Kubernetes//WorkloadEntry/{namespace}/x"
        entry = await ztunnel.wait(
            lambda: ztunnel.state.workloads.get(uid), what="the WorkloadEntry"
        )
        assert [str(a) for a in entry.addresses] == ["10.9.0.7"]
        key = f"{namespace}/api.example.com"
        external = await ztunnel.wait(
            lambda: ztunnel.state.services.get(key), what="the ServiceEntry"
        )
        assert [str(a) for a in external.addresses] == ["240.0.0.7"]

        we = by_kind("WorkloadEntry")
        await admin.patch(we.path(namespace, "x"), {"spec": {"address": "10.9.0.8"}})
        await ztunnel.wait(
            lambda: [str(a) for a in ztunnel.state.workloads[uid].addresses] == ["10.9.0.8"],
            what="the new address",
        )
        await admin.delete(we.path(namespace, "x"))
        await admin.delete(by_kind("ServiceEntry").path(namespace, "x"))
        await ztunnel.wait(
            lambda: uid not in ztunnel.state.workloads and key not in ztunnel.state.services,
            what="both gone",
        )


def _policy(kind: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }


def _authorization(ztunnel: Subscriber, key: str) -> Any:
    return next((p for p in ztunnel.state.policies.authorizations() if p.key == key), None)


def _keys(ztunnel: Subscriber) -> set[str]:
    return {p.key for p in ztunnel.state.policies.authorizations()}


async def test_security_policies(
    controlplane: RunningPlane, admin: KubeClient, namespace: str
) -> None:
    policy = by_kind("AuthorizationPolicy")
    peer = by_kind("PeerAuthentication")
    key = f"{namespace}/p"
    async with Subscriber(controlplane, "node-3") as ztunnel:
        deny = {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["evil"]}}]}]}
        await create(admin, _policy("AuthorizationPolicy", namespace, deny))
        found = await ztunnel.wait(lambda: _authorization(ztunnel, key), what="the policy")
        assert found.action.value == "DENY"
        await admin.patch(policy.path(namespace, "p"), {"spec": {"action": "ALLOW"}})
        await ztunnel.wait(
            lambda: _authorization(ztunnel, key).action.value == "ALLOW", what="ALLOW"
        )
        await admin.delete(policy.path(namespace, "p"))
        await ztunnel.wait(lambda: _authorization(ztunnel, key) is None, what="policy gone")

        # A PeerAuthentication reaches ztunnel as the DENY policies istiod derives from it.
        before = _keys(ztunnel)
        await create(admin, _policy("PeerAuthentication", namespace, {"mtls": {"mode": "STRICT"}}))
        await ztunnel.wait(lambda: _keys(ztunnel) != before, what="STRICT's policies")
        await admin.delete(peer.path(namespace, "p"))
        await ztunnel.wait(lambda: _keys(ztunnel) == before, what="PeerAuthentication gone")


_L7 = {
    "RequestAuthentication": (
        "security.istio.io/v1",
        {"jwtRules": [{"issuer": "https://issuer.example"}]},
    ),
    "HTTPRoute": (
        "gateway.networking.k8s.io/v1",
        {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    ),
    "GRPCRoute": (
        "gateway.networking.k8s.io/v1",
        {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    ),
    "VirtualService": (
        "networking.istio.io/v1",
        {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
    ),
    "DestinationRule": (
        "networking.istio.io/v1",
        {"host": "web", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
    ),
    "Telemetry": ("telemetry.istio.io/v1", {"accessLogging": [{"disabled": True}]}),
}


async def test_l7_kinds_reach_waypoints(
    controlplane: RunningPlane, admin: KubeClient, namespace: str
) -> None:
    async with Subscriber(controlplane, "node-4") as ztunnel:
        for kind, (api_version, spec) in _L7.items():
            await create(
                admin,
                {
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"name": "x", "namespace": namespace},
                    "spec": spec,
                },
            )
        names = {f"{kind}/{namespace}/x" for kind in _L7}
        await ztunnel.wait(lambda: names <= set(ztunnel.l7.names), what=f"{sorted(names)}")
        # An update reaches the waypoint's copy; a delete removes it.
        await admin.patch(
            by_kind("DestinationRule").path(namespace, "x"),
            {"spec": {"trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}},
        )
        ref = next(
            r
            for r in ztunnel.l7.config.objects
            if r.kind == "DestinationRule" and r.namespace == namespace
        )
        await ztunnel.wait(
            lambda: "RANDOM" in repr(ztunnel.l7.config.objects.get(ref)),
            what="the updated DestinationRule",
        )
        for kind in _L7:
            await admin.delete(by_kind(kind).path(namespace, "x"))
        await ztunnel.wait(lambda: not names & set(ztunnel.l7.names), what="L7 objects gone")


async def test_the_mesh_config_reaches_waypoints(
    controlplane: RunningPlane, admin: KubeClient
) -> None:
    info = by_kind("ConfigMap")
    mesh = "extensionProviders:\n- name: otel\n  opentelemetry: {service: collector, port: 4317}\n"
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": mesh},
    }
    async with Subscriber(controlplane, "node-4") as ztunnel:
        await admin.create(info.path("istio-system"), body)
        try:
            name = "ConfigMap/istio-system/istio"
            await ztunnel.wait(lambda: name in ztunnel.l7.names, what=name)
            await admin.patch(
                info.path("istio-system", "istio"), {"data": {"mesh": mesh.replace("4317", "4318")}}
            )

            def port() -> int | None:
                found = [o for o in ztunnel.l7.config.by_kind("ConfigMap")]
                provider = found[0].mesh.provider("otel") if found else None  # type: ignore[attr-defined]
                return provider.port if provider is not None else None

            await ztunnel.wait(lambda: port() == 4318, what="the edited mesh config")
        finally:
            await admin.delete(info.path("istio-system", "istio"))
        await ztunnel.wait(lambda: name not in ztunnel.l7.names, what="mesh config gone")
