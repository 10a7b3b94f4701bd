"""An API server's objects through the loader: views, readiness, stand-ins for invalid policies."""

from __future__ import annotations

import copy
from typing import Any

from ambient.config import Pod, Service
from ambient.kube.convert import LAST_APPLIED, convert, convertible, describe, view
from ambient.kube.kinds import POD, SERVICE, by_kind

API_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web-1",
        "namespace": "shop",
        "uid": "u-1",
        "resourceVersion": "7",
        "labels": {"app": "web"},
        "annotations": {LAST_APPLIED: "{...}", "team": "a"},
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {
        "nodeName": "node-1",
        "serviceAccountName": "web",
        "schedulingGates": [],
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [
            {
                "name": "app",
                "image": "nginx",
                "envFrom": [{"secretRef": {"name": "s"}}],
                "ports": [
                    {"containerPort": 8080, "name": "http", "protocol": "TCP", "hostPort": 80}
                ],
            }
        ],
        "volumes": [{"name": "v", "emptyDir": {}}],
    },
    "status": {
        "phase": "Running",
        "podIP": "10.244.0.5",
        "hostIP": "192.168.0.1",
        "observedGeneration": 1,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    },
}


def test_a_pod_as_an_api_server_serves_it() -> None:
    doc = view(POD, API_POD)
    assert doc["metadata"] == {
        "name": "web-1",
        "namespace": "shop",
        "labels": {"app": "web"},
        "annotations": {"team": "a"},
    }
    assert doc["spec"]["containers"] == [
        {"name": "app", "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]}
    ]
    converted = convert(doc)
    assert converted.errors == ()
    pod = converted.obj
    assert isinstance(pod, Pod)
    assert (pod.spec.node_name, pod.spec.service_account_name) == ("node-1", "web")
    assert (pod.status.pod_ip, pod.status.host_ip, pod.status.ready) == (
        "10.244.0.5",
        "192.168.0.1",
        True,
    )


def test_readiness_follows_the_condition_and_deletion() -> None:
    raw = copy.deepcopy(API_POD)
    raw["status"]["conditions"][1]["status"] = "False"
    assert convert(view(POD, raw)).obj.status.ready is False  # type: ignore[union-attr]
    raw = copy.deepcopy(API_POD)
    raw["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert convert(view(POD, raw)).obj.status.ready is False  # type: ignore[union-attr]
    pending = copy.deepcopy(API_POD)
    pending["spec"].pop("nodeName")
    pending["status"] = {"phase": "Pending"}
    pod = convert(view(POD, pending)).obj
    assert isinstance(pod, Pod) and pod.spec.node_name == "" and pod.status.pod_ip is None


def test_a_view_ignores_what_the_mesh_does_not_read() -> None:
    changed = copy.deepcopy(API_POD)
    changed["metadata"]["resourceVersion"] = "8"
    changed["status"]["conditions"][0]["lastProbeTime"] = "now"
    changed["status"]["containerStatuses"] = [{"name": "app", "restartCount": 3}]
    assert view(POD, changed) == view(POD, API_POD)


def test_a_service_keeps_its_cluster_ip_and_no_node_port_warning() -> None:
    raw = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.20",
            "clusterIPs": ["10.96.0.20"],
            "ports": [
                {
                    "name": "http",
                    "port": 80,
                    "targetPort": "http",
                    "nodePort": 30080,
                    "protocol": "TCP",
                }
            ],
            "selector": {"app": "web"},
            "sessionAffinity": "None",
        },
    }
    converted = convert(view(SERVICE, raw))
    assert converted.errors == () and converted.warnings == ()
    assert isinstance(converted.obj, Service) and converted.obj.spec.cluster_ip == "10.96.0.20"


def _policy(spec: dict[str, Any], kind: str = "AuthorizationPolicy") -> dict[str, Any]:
    return view(
        by_kind(kind),
        {
            "apiVersion": "security.istio.io/v1",
            "kind": kind,
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": spec,
        },
    )


def test_an_invalid_deny_policy_becomes_a_deny_of_everything_at_its_scope() -> None:
    spec = {
        "selector": {"matchLabels": {"app": "db"}},
        "action": "DENY",
        "rules": [{"from": [{"source": {"ipBlocks": ["300.1.1.1"]}}]}],
    }
    converted = convert(_policy(spec))
    assert [describe("AuthorizationPolicy", "shop", "p", e) for e in converted.errors] == [
        "AuthorizationPolicy shop/p: spec.rules[0].from[0].source.ipBlocks[0]: invalid IP address or "
        "CIDR '300.1.1.1': '300.1.1.1' does not appear to be an IPv4 or IPv6 address"
    ]
    assert converted.standin is not None
    assert converted.standin["spec"] == {
        "selector": {"matchLabels": {"app": "db"}},
        "action": "DENY",
        "rules": [{}],
    }
    assert converted.obj is not None


def test_an_invalid_allow_policy_allows_nothing_and_a_bad_selector_widens_the_scope() -> None:
    spec = {
        "selector": {"matchLabels": "app=x"},
        "action": "ALLOW",
        "rules": [{"to": [{"operation": {"ports": ["http"]}}]}],
    }
    converted = convert(_policy(spec))
    assert converted.errors
    assert converted.standin is not None and converted.standin["spec"] == {"action": "ALLOW"}


def test_an_invalid_peer_authentication_is_strict_and_audit_has_no_standin() -> None:
    peer = convert(_policy({"mtls": {"mode": "SOMETIMES"}}, "PeerAuthentication"))
    assert (
        peer.errors
        and peer.standin is not None
        and peer.standin["spec"] == {"mtls": {"mode": "STRICT"}}
    )
    audit = convert(
        _policy({"action": "AUDIT", "rules": [{"from": [{"source": {"ipBlocks": ["x"]}}]}]})
    )
    assert audit.errors and audit.standin is None and audit.obj is None


def test_which_kinds_convert() -> None:
    assert convertible("HTTPRoute") and convertible("Pod")
    assert not convertible("Node")


def test_the_mesh_config_map_is_watched_in_istio_system_and_converted() -> None:
    info = by_kind("ConfigMap")
    assert info.scope == "istio-system"
    assert info.path(info.scope) == "/api/v1/namespaces/istio-system/configmaps"
    raw = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system", "resourceVersion": "7"},
        "data": {
            "mesh": "extensionProviders:\n- name: otel\n  opentelemetry: {service: c, port: 4317}\n",
            "meshNetworks": "networks: {}",
        },
    }
    doc = view(info, raw)
    assert doc["data"] == {"mesh": raw["data"]["mesh"]}  # type: ignore[index]
    mesh = convert(doc).obj.mesh  # type: ignore[union-attr]
    assert mesh is not None and mesh.provider("OTEL") is not None
