"""The running mesh's objects in their API form, for ``ambient get`` in folder mode.

Configuration objects are the manifests as written (``GET /manifests``: the live
labels, ``metadata.creationTimestamp`` and a Gateway's ``status``), so ``get -o yaml``
applies back unchanged. Pods and a Deployment's ``status`` come from the local
runtime (``GET /pods``), shaped as the kubelet and the deployment controller write
them:

- a Pod of a Deployment is the Deployment's template with the pod's name, labels,
  ``nodeName`` and a ``status`` (``phase``, ``podIP``, ``hostIP``, the ``Ready``
  condition, ``containerStatuses``); folder mode has no ReplicaSets, so its
  ``ownerReferences`` name the Deployment itself;
- container states: running; ``waiting`` ``ContainerCreating`` before the first start
  and ``CrashLoopBackOff`` between restarts; ``terminated`` (``Completed``/``Error``)
  once stopped. The phase is ``Pending`` until a container has started, then
  ``Running`` (a crash-looping pod stays ``Running``, as in Kubernetes);
- a Deployment's ``replicas``/``updatedReplicas`` count its pods, ``readyReplicas`` and
  ``availableReplicas`` the ready ones.

The mesh's own ztunnel pods (``local.systempods``) are owned by a DaemonSet ``ztunnel``
in ``ambient-system`` (none is declared: it is made from them): one pod wanted per
node, its template's container named ``ztunnel`` (each pod's container carries the
pod's name, as its log file does).

A node (``ambient up``'s ``node-N``) is a Node of the host's OS, ``Ready`` while its
ztunnel answers its readiness check (what it needs to serve its pods), created when its
ztunnel was; VERSION is ambient's (``ambient up`` plays its kubelet), the runtime
``ambient://VERSION`` as ``ambient up --kubeconfig``'s nodes report it.

A Service's allocated address is not added to its ``spec`` (it was not written, and
applying it back would pin it): ``get svc`` shows it in CLUSTER-IP only.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ambient import __version__

__all__ = ["cluster_ips", "deployment_status", "node_object", "pod_object", "ztunnel_daemonset"]


def _stamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_status(c: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any]
    if c["state"] == "running":
        state = {"running": {"startedAt": _stamp(c.get("startedAt"))}}
    elif c["state"] == "back-off":
        state = {"waiting": {"reason": "CrashLoopBackOff", "message": c.get("message") or ""}}
    elif c["state"] == "terminated":
        code = c.get("lastExitCode") or 0
        state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    status: dict[str, Any] = {
        "name": c["name"],
        "image": spec.get("image", ""),
        "ready": bool(c.get("ready")),
        "restartCount": int(c.get("restarts") or 0),
        "started": c["state"] == "running",
        "state": state,
    }
    if c.get("lastExitCode") is not None and c["state"] != "terminated":
        status["lastState"] = {"terminated": {"exitCode": c["lastExitCode"]}}
    return status


def pod_object(
    pod: Mapping[str, Any], manifests: Mapping[tuple[str, str, str], Any]
) -> dict[str, Any]:
    """A pod of ``GET /pods`` as a Pod object; ``manifests`` by (kind, namespace, name)."""
    ns, name = pod["namespace"], pod["name"]
    owner = None
    if pod.get("workload_type") == "deployment":
        source = manifests.get(("Deployment", ns, pod["workload"])) or {}
        spec = copy.deepcopy(((source.get("spec") or {}).get("template") or {}).get("spec") or {})
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": pod["workload"],
            "controller": True,
        }
    elif pod.get("spec") is not None:  # the mesh's own (local.systempods): no manifest
        spec = copy.deepcopy(pod["spec"])
        if pod.get("workload_type") == "daemonset":
            owner = {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": pod["workload"],
                "controller": True,
            }
    else:
        spec = copy.deepcopy((manifests.get(("Pod", ns, name)) or {}).get("spec") or {})
    if pod["node"]:
        spec["nodeName"] = pod["node"]
    specs = {c.get("name"): c for c in spec.get("containers") or []}
    containers = [_container_status(c, specs.get(c["name"], {})) for c in pod.get("containers", [])]
    started = any(c["state"] != "waiting" or c.get("restarts") for c in pod.get("containers", []))
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "uid": pod.get("uid"),
        "creationTimestamp": _stamp(pod.get("created")),
    }
    if pod.get("labels"):
        metadata["labels"] = dict(pod["labels"])
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {k: v for k, v in metadata.items() if v is not None},
        "spec": spec,
        "status": {
            "phase": "Running" if started else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if pod.get("ready") else "False"}],
            "hostIP": pod.get("hostIP"),
            "podIP": pod["ip"],
            "podIPs": [{"ip": pod["ip"]}],
            "startTime": _stamp(pod.get("created")),
            "containerStatuses": containers,
        },
    }


def deployment_status(
    deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The ``status`` the deployment controller would write, from the deployment's pods."""
    meta = deployment.get("metadata") or {}
    mine = [
        p
        for p in pods
        if p.get("workload_type") == "deployment"
        and p["namespace"] == meta.get("namespace")
        and p["workload"] == meta.get("name")
    ]
    ready = sum(1 for p in mine if p.get("ready"))
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    status: dict[str, Any] = {"replicas": len(mine), "updatedReplicas": len(mine)}
    if ready:
        status["readyReplicas"] = ready
        status["availableReplicas"] = ready
    if len(mine) > ready:
        status["unavailableReplicas"] = len(mine) - ready
    available = ready >= wanted
    status["conditions"] = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
        }
    ]
    return status


def cluster_ips(dumps: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(namespace, name) -> the first VIP of each Service, from ztunnels' config dumps."""
    out: dict[tuple[str, str], str] = {}
    for dump in dumps:
        for service in dump.get("services", []):
            if service.get("vips"):
                out.setdefault((service["namespace"], service["name"]), service["vips"][0])
    return out


def ztunnel_daemonset(pods: Sequence[Mapping[str, Any]], nodes: int) -> dict[str, Any] | None:
    """The DaemonSet ``ztunnel`` the mesh's ztunnel pods belong to (see the module
    docstring), with the ``status`` its controller would write; None without any."""
    mine = [p for p in pods if p.get("workload_type") == "daemonset"]
    if not mine:
        return None
    first = mine[0]
    ready = sum(1 for p in mine if p.get("ready"))
    created = min((p["created"] for p in mine if p.get("created") is not None), default=None)
    labels = {"app": "ztunnel"}
    meta: dict[str, Any] = {"name": first["workload"], "namespace": first["namespace"]}
    if created is not None:
        meta["creationTimestamp"] = _stamp(created)
    meta["labels"] = labels
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": (first.get("spec") or {}).get("serviceAccountName"),
                    "containers": [{"name": "ztunnel"}],
                },
            },
        },
        "status": {
            "desiredNumberScheduled": nodes,
            "currentNumberScheduled": len(mine),
            "numberReady": ready,
            "updatedNumberScheduled": len(mine),
            "numberAvailable": ready,
            "numberMisscheduled": 0,
        },
    }


def node_object(node: Mapping[str, Any], ztunnel: Mapping[str, Any] | None) -> dict[str, Any]:
    """A node of ``GET /nodes`` as a Node (see the module docstring); ``ztunnel`` its
    ztunnel pod of ``GET /system-pods``, if one runs."""
    ready = bool(ztunnel and ztunnel.get("ready"))
    meta: dict[str, Any] = {
        "name": node["name"],
        "labels": {"kubernetes.io/hostname": node["name"], "kubernetes.io/os": "linux"},
    }
    if ztunnel and ztunnel.get("created") is not None:
        meta["creationTimestamp"] = _stamp(ztunnel["created"])
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta,
        "spec": {},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node["ip"]},
                {"type": "Hostname", "address": node["name"]},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                }
            ],
            "nodeInfo": {
                "kubeletVersion": f"v{__version__}",
                "containerRuntimeVersion": f"ambient://{__version__}",
                "kernelVersion": platform.release(),
                "operatingSystem": "linux",
                "architecture": platform.machine(),
            },
        },
    }
