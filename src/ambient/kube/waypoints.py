"""A waypoint Gateway's Deployment, Service and ServiceAccount in the cluster, as istiod's
gateway deployment controller makes them.

For each valid Gateway of class ``istio-waypoint`` the controller applies (server-side
apply, field manager ``ambient-controlplane``, ownerReferences to the Gateway so that
Kubernetes' garbage collector deletes them with it):

- ServiceAccount ``<gw>``: the waypoint's identity ``spiffe://<td>/ns/<ns>/sa/<gw>``;
- Deployment ``<gw>``: pods labelled ``gateway.networking.k8s.io/gateway-name: <gw>``,
  ``gateway.networking.k8s.io/gateway-class-name: istio-waypoint``,
  ``gateway.istio.io/managed: istio.io-mesh-controller``, ``istio.io/dataplane-mode:
  none`` (a waypoint is never captured), Istio's canonical name/revision labels and
  the Gateway's ``spec.infrastructure`` labels and annotations; ``replicas`` is left
  to the Deployment (1, or what ``kubectl scale`` sets);
- Service ``<gw>``: ``status-port`` 15021 and one port per listener (``mesh`` 15008,
  appProtocol ``hbone``), selecting those pods.

The pods are ordinary Kubernetes pods: ReplicaSets create them, the scheduler binds
them, and a kubelet runs them and reports their IP and readiness (part 2 brings the
project's kubelet; until then a test acts as one). The model of the folder mode is
kept: the node proxy of the node a waypoint pod is bound to hosts that waypoint on
the pod's address (``ambient.ztunnel.waypoints``), with the pod's identity. The pod's
one container therefore runs ``ambient waypoint hosted``, which only stands for the
waypoint in the pod (it waits for the hosted waypoint's readiness on its address and
exits on SIGTERM); its readiness probe is the waypoint's ``:15021/healthz/ready``,
served by the node proxy on the pod's address. ``image`` is required by Kubernetes and
means nothing to the project's kubelet, which runs commands as local processes.

The folder mode's ``ambient.io/replicas`` and ``ambient.io/nodes`` annotations are its
stand-ins for scaling and scheduling; in a cluster the Deployment and the scheduler do
that, so they are not read here.
"""

from __future__ import annotations

import re
from typing import Any

from ambient.config.gateway import WAYPOINT_CLASS, Gateway
from ambient.config.resources import LABEL_DATAPLANE_MODE

__all__ = [
    "LABEL_GATEWAY_CLASS",
    "LABEL_GATEWAY_NAME",
    "LABEL_MANAGED",
    "MANAGED_VALUE",
    "WAYPOINT_COMMAND",
    "WAYPOINT_IMAGE",
    "waypoint_objects",
]

LABEL_GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"
LABEL_GATEWAY_CLASS = "gateway.networking.k8s.io/gateway-class-name"
LABEL_MANAGED = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-mesh-controller"
WAYPOINT_IMAGE = "ambient"
WAYPOINT_COMMAND = ("ambient", "waypoint", "hosted")
STATUS_PORT = 15021
PROMETHEUS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "15020",
    "prometheus.io/path": "/stats/prometheus",
}
_GATEWAY_API = "gateway.networking.k8s.io/v1"


def _port_name(name: str, used: set[str], index: int, protocol: str) -> str:
    """A Service port name from a listener name: a DNS label, unique in the Service."""
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63].strip("-")
    cleaned = cleaned or f"{protocol.lower()}-{index}"
    candidate, n = cleaned, 0
    while candidate in used:
        n += 1
        candidate = f"{cleaned[: 63 - len(str(n)) - 1]}-{n}"
    used.add(candidate)
    return candidate


def _service_ports(gateway: Gateway) -> list[dict[str, Any]]:
    ports = [{"name": "status-port", "port": STATUS_PORT, "protocol": "TCP", "appProtocol": "tcp"}]
    used, numbers = {"status-port"}, {STATUS_PORT}
    for index, listener in enumerate(gateway.spec.listeners):
        if listener.port in numbers:
            continue
        numbers.add(listener.port)
        ports.append(
            {
                "name": _port_name(listener.name, used, index, listener.protocol),
                "port": listener.port,
                "protocol": "TCP",
                "appProtocol": listener.protocol.lower(),
            }
        )
    return ports


def _env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def waypoint_objects(
    gateway: Gateway, uid: str, image: str = WAYPOINT_IMAGE
) -> list[dict[str, Any]]:
    """The ServiceAccount, Deployment and Service of waypoint ``gateway`` (uid ``uid``); its
    container's ``image`` is the mesh's own (``controlplane --waypoint-image``: on a real
    cluster, the image ``ambient install --profile ambient`` runs, as istiod uses its
    proxy image)."""
    if gateway.spec.gateway_class_name != WAYPOINT_CLASS:
        return []
    ns, name = gateway.meta.namespace, gateway.meta.name
    infra = gateway.spec.infrastructure
    owner = {"apiVersion": _GATEWAY_API, "kind": "Gateway", "name": name, "uid": uid}
    identity = {LABEL_GATEWAY_NAME: name, LABEL_GATEWAY_CLASS: WAYPOINT_CLASS}
    annotations = dict(infra.annotations)

    def meta(labels: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "ownerReferences": [owner],
        }
        if annotations:
            out["annotations"] = annotations
        return out

    pod_labels = {
        "sidecar.istio.io/inject": "false",
        LABEL_DATAPLANE_MODE: "none",
        "service.istio.io/canonical-name": name,
        "service.istio.io/canonical-revision": "latest",
        **infra.labels,
        **identity,
        LABEL_MANAGED: MANAGED_VALUE,
    }
    container = {
        "name": "waypoint",
        "image": image,
        "command": list(WAYPOINT_COMMAND),
        "env": [
            _env("POD_NAME", "metadata.name"),
            _env("POD_NAMESPACE", "metadata.namespace"),
            _env("POD_IP", "status.podIP"),
            _env("NODE_NAME", "spec.nodeName"),
            _env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ],
        "ports": [
            {"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"},
            {"name": "mesh", "containerPort": 15008, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 15020, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": STATUS_PORT},
            "periodSeconds": 5,
        },
    }
    # Istio's waypoint pods are annotated for Prometheus's pod discovery (its addon's
    # kubernetes-pods job, ``ambient prometheus-config --kubeconfig``); infrastructure
    # annotations may override them.
    template_meta: dict[str, Any] = {
        "labels": pod_labels,
        "annotations": {**PROMETHEUS_ANNOTATIONS, **annotations},
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta({**infra.labels, **identity}),
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta({**infra.labels, **identity, LABEL_MANAGED: MANAGED_VALUE}),
            "spec": {
                "selector": {"matchLabels": {LABEL_GATEWAY_NAME: name}},
                "template": {
                    "metadata": template_meta,
                    "spec": {"serviceAccountName": name, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta({**infra.labels, **identity}),
            "spec": {"selector": {LABEL_GATEWAY_NAME: name}, "ports": _service_ports(gateway)},
        },
    ]
