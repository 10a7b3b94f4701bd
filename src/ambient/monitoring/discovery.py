"""What Prometheus should scrape in a mesh (a folder's or a cluster's), as HTTP service discovery target groups.

Served by the control plane on ``:15014/prometheus/sd`` (Prometheus's ``http_sd_configs``
format: a JSON list of ``{"targets": ["host:port"], "labels": {...}}``), computed from the
current index on every request, so a node or a waypoint that appears is listed at
Prometheus's next refresh.

Decisions (Istio's conventions: the ``kubernetes-pods`` job of Istio's Prometheus addon,
which keeps pods annotated ``prometheus.io/scrape`` and labels each series with the pod's
labels, ``namespace``, ``pod`` and ``node``):

- each node's ztunnel: ``<node IP>:15020``, path ``/metrics``, labels ``app="ztunnel"``,
  ``namespace``/``pod`` the system pod that runs it (``ambient-system/ztunnel-<node>``,
  as ``ambient up`` names it), ``node``. On a cluster (``cluster=True``) a ztunnel is a
  pod of its own that listens on its pod IP, not on its node's: each pod labelled
  ``app=ztunnel`` in ``istio-system`` with an IP is listed at ``<pod IP>:15020`` with its
  own ``namespace``/``pod``, as Istio's Prometheus scrapes pods by their IP (a node whose
  ztunnel pod has no IP yet is listed once it has one);
- each waypoint pod: ``<pod IP>:15020``, path ``/stats/prometheus`` (Envoy's, which
  Istio's waypoint pods are annotated with), its pod labels mapped as Prometheus's
  ``labelmap`` maps ``__meta_kubernetes_pod_label_*`` (every character that is not
  ``[a-zA-Z0-9_]`` becomes ``_``), ``namespace``, ``pod``, ``node``;
- the control plane itself: ``<its address>:15014``, ``app="istiod"`` (what Istio's
  Grafana dashboards select the control plane by), ``namespace``/``pod``
  ``ambient-system/controlplane``.

Application pods are not listed: their processes serve no metrics of the mesh (Istio's
ztunnel and waypoint report for them). In ``--netns`` mode a waypoint's address is inside
its pod's network namespace; a Prometheus on the host reaches the ztunnels and the control
plane, not the waypoints (on a cluster ``ambient dashboard`` reads them through their
node's kubelet socket: ``ambient.kube.podport``).
"""

from __future__ import annotations

import re
from typing import Any

from ambient.controlplane.snapshot import MeshSnapshot
from ambient.state.workload import Workload, waypoint_of

__all__ = [
    "CONTROL_PLANE_APP",
    "SYSTEM_NAMESPACE",
    "prometheus_label",
    "scrape_targets",
]

SYSTEM_NAMESPACE = "ambient-system"
"""The namespace of the mesh's own pods in folder mode (``ambient up``'s system pods)."""
CLUSTER_ZTUNNEL_NAMESPACE = "istio-system"
"""Where a cluster's ztunnel pods run (``ambient install``'s DaemonSet, a kubelet's own)."""
CONTROL_PLANE_APP = "istiod"
METRICS_PORT = 15020
MONITORING_PORT = 15014
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_label(name: str) -> str:
    """A Kubernetes label name as Prometheus's Kubernetes discovery spells it in a label."""
    return _INVALID.sub("_", name)


def _host_port(address: object, port: int) -> str:
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _waypoint_group(workload: Workload) -> dict[str, Any]:
    labels = {prometheus_label(k): v for k, v in sorted(workload.labels.items())}
    labels |= {
        "namespace": workload.namespace,
        "pod": workload.name,
        "node": workload.node,
        "__metrics_path__": "/stats/prometheus",
    }
    return {"targets": [_host_port(workload.addresses[0], METRICS_PORT)], "labels": labels}


def _ztunnel_group(target: str, namespace: str, pod: str, node: str) -> dict[str, Any]:
    return {
        "targets": [target],
        "labels": {
            "app": "ztunnel",
            "namespace": namespace,
            "pod": pod,
            "node": node,
            "__metrics_path__": "/metrics",
        },
    }


def _ztunnel_pods(snapshot: MeshSnapshot) -> list[dict[str, Any]]:
    pods = [
        w
        for w in snapshot.workloads.values()
        if w.local
        and w.addresses
        and w.namespace == CLUSTER_ZTUNNEL_NAMESPACE
        and w.labels.get("app") == "ztunnel"
    ]
    return [
        _ztunnel_group(_host_port(w.addresses[0], METRICS_PORT), w.namespace, w.name, w.node)
        for w in sorted(pods, key=lambda w: (w.node, w.name))
    ]


def scrape_targets(
    snapshot: MeshSnapshot,
    *,
    control_plane: str | None = None,
    system_namespace: str = SYSTEM_NAMESPACE,
    cluster: bool = False,
) -> list[dict[str, Any]]:
    """The target groups of the mesh in ``snapshot`` (see the module docstring).

    ``control_plane``: the ``host:port`` of the monitoring port itself, listed first;
    ``cluster``: ``snapshot`` is a cluster's (ztunnels are found as pods)."""
    groups: list[dict[str, Any]] = []
    if control_plane is not None:
        groups.append(
            {
                "targets": [control_plane],
                "labels": {
                    "app": CONTROL_PLANE_APP,
                    "namespace": system_namespace,
                    "pod": "controlplane",
                    "__metrics_path__": "/metrics",
                },
            }
        )
    if cluster:
        groups += _ztunnel_pods(snapshot)
    else:
        for node, ip in sorted(snapshot.nodes.items()):
            target = _host_port(ip, METRICS_PORT)
            groups.append(_ztunnel_group(target, system_namespace, f"ztunnel-{node}", node))
    waypoints = [
        w
        for w in snapshot.workloads.values()
        if w.local and w.addresses and waypoint_of(w) is not None
    ]
    for workload in sorted(waypoints, key=lambda w: (w.namespace, w.name)):
        groups.append(_waypoint_group(workload))
    return groups
