"""kubectl's ``get`` tables for objects in their API form (folder mode; a cluster's
server prints its own tables, ``kube.objects.server_table``).

Columns as kubectl v1.37 prints them: the built-in printers of the core kinds
(``pkg/printers/internalversion`` in kubernetes/kubernetes: Pod, Deployment,
DaemonSet, Service, Namespace, Node; ServiceAccount has NAME AGE only) and, for the custom resources, the
``additionalPrinterColumns`` of the CRDs ``ambient install`` applies
(``printer_columns.json``, generated from them by ``scripts/printer-columns``;
a kind without columns gets NAME AGE, as the API server's default table).
Columns of priority > 0 show with ``-o wide`` only. A custom column's cell is
the first value its JSONPath finds (lists and maps as compact JSON, nothing when
missing); ``date`` columns and AGE are kubectl's human durations.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from ambient.cli import jsonpath

__all__ = ["Column", "columns_for", "human_duration", "table"]

Column = tuple[str, str, int]  # (header, what, priority)


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: ``45s``, ``5m3s``, ``17m``, ``3h4m``, ``2d3h``, ``1y20d``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _since(timestamp: object, now: float) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration(now - then.timestamp())


# -- the built-in printers -----------------------------------------------------------------

_BUILTIN: dict[str, list[Column]] = {
    "Pod": [
        ("READY", "ready", 0),
        ("STATUS", "status", 0),
        ("RESTARTS", "restarts", 0),
        ("AGE", "age", 0),
        ("IP", "ip", 1),
        ("NODE", "node", 1),
        ("NOMINATED NODE", "nominated", 1),
        ("READINESS GATES", "gates", 1),
    ],
    "Deployment": [
        ("READY", "ready", 0),
        ("UP-TO-DATE", "updated", 0),
        ("AVAILABLE", "available", 0),
        ("AGE", "age", 0),
        ("CONTAINERS", "containers", 1),
        ("IMAGES", "images", 1),
        ("SELECTOR", "selector", 1),
    ],
    "DaemonSet": [
        ("DESIRED", "desired", 0),
        ("CURRENT", "current", 0),
        ("READY", "numberReady", 0),
        ("UP-TO-DATE", "updatedScheduled", 0),
        ("AVAILABLE", "numberAvailable", 0),
        ("NODE SELECTOR", "nodeSelector", 0),
        ("AGE", "age", 0),
        ("CONTAINERS", "containers", 1),
        ("IMAGES", "images", 1),
        ("SELECTOR", "selector", 1),
    ],
    "Service": [
        ("TYPE", "type", 0),
        ("CLUSTER-IP", "clusterIP", 0),
        ("EXTERNAL-IP", "externalIP", 0),
        ("PORT(S)", "ports", 0),
        ("AGE", "age", 0),
        ("SELECTOR", "selector", 1),
    ],
    "Namespace": [("STATUS", "phase", 0), ("AGE", "age", 0)],
    "ServiceAccount": [("AGE", "age", 0)],
    "Node": [
        ("STATUS", "nodeStatus", 0),
        ("ROLES", "roles", 0),
        ("AGE", "age", 0),
        ("VERSION", "kubeletVersion", 0),
        ("INTERNAL-IP", "internalIP", 1),
        ("EXTERNAL-IP", "externalIP", 1),
        ("OS-IMAGE", "osImage", 1),
        ("KERNEL-VERSION", "kernelVersion", 1),
        ("CONTAINER-RUNTIME", "containerRuntimeVersion", 1),
    ],
}
_CORE_GROUPS = ("", "apps")


@functools.cache
def _crd_columns() -> dict[str, list[dict[str, Any]]]:
    text = resources.files("ambient.cli").joinpath("printer_columns.json").read_text()
    loaded: dict[str, list[dict[str, Any]]] = json.loads(text)
    return loaded


def columns_for(kind: str, group: str) -> list[Column]:
    """NAME excluded: a kind's columns as (HEADER, what, priority)."""
    if group in _CORE_GROUPS and kind in _BUILTIN:
        return _BUILTIN[kind]
    found = _crd_columns().get(f"{kind}.{group}")
    if not found:
        return [("AGE", "age", 0)]
    return [
        (c["name"].upper(), f"{c['type']}:{c['jsonPath']}", int(c.get("priority", 0)))
        for c in found
    ]


def _group(api_version: object) -> str:
    text = str(api_version or "")
    return text.split("/", 1)[0] if "/" in text else ""


# -- cells ---------------------------------------------------------------------------------


def _pod_status(obj: Mapping[str, Any]) -> tuple[str, int, int, int]:
    """(STATUS, ready containers, containers, restarts) as kubectl's printPod works them out."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    restarts, ready, running = 0, 0, False
    for cs in reversed(status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
        elif terminated:
            code = terminated.get("exitCode", 0)
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
        elif cs.get("ready") and state.get("running") is not None:
            running = True
            ready += 1
    if reason == "Completed" and running:
        ready_condition = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        reason = "Running" if ready_condition else "NotReady"
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason, ready, len(spec.get("containers") or []), restarts


def _ports(spec: Mapping[str, Any]) -> str:
    parts = []
    for port in spec.get("ports") or []:
        text = str(port.get("port"))
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol') or 'TCP'}")
    return ",".join(parts) or "<none>"


def _selector_text(selector: Mapping[str, Any] | None) -> str:
    if not selector:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _builtin_cell(what: str, obj: Mapping[str, Any], now: float) -> str:
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if what == "age":
        return _since(meta.get("creationTimestamp"), now)
    if obj.get("kind") == "Pod":
        reason, ready, total, restarts = _pod_status(obj)
        gates = spec.get("readinessGates") or []
        return {
            "ready": f"{ready}/{total}",
            "status": reason,
            "restarts": str(restarts),
            "ip": status.get("podIP") or "<none>",
            "node": spec.get("nodeName") or "<none>",
            "nominated": status.get("nominatedNodeName") or "<none>",
            "gates": f"0/{len(gates)}" if gates else "<none>",
        }[what]
    if obj.get("kind") == "Deployment":
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        match = (spec.get("selector") or {}).get("matchLabels")
        return {
            "ready": f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            "updated": str(status.get("updatedReplicas", 0)),
            "available": str(status.get("availableReplicas", 0)),
            "containers": ",".join(c.get("name", "") for c in containers),
            "images": ",".join(c.get("image") or "" for c in containers),
            "selector": _selector_text(match),
        }[what]
    if obj.get("kind") == "DaemonSet":
        template = (spec.get("template") or {}).get("spec") or {}
        containers = template.get("containers") or []
        return {
            "desired": str(status.get("desiredNumberScheduled", 0)),
            "current": str(status.get("currentNumberScheduled", 0)),
            "numberReady": str(status.get("numberReady", 0)),
            "updatedScheduled": str(status.get("updatedNumberScheduled", 0)),
            "numberAvailable": str(status.get("numberAvailable", 0)),
            "nodeSelector": _selector_text(template.get("nodeSelector")),
            "containers": ",".join(c.get("name", "") for c in containers),
            "images": ",".join(c.get("image") or "" for c in containers),
            "selector": _selector_text((spec.get("selector") or {}).get("matchLabels")),
        }[what]
    if obj.get("kind") == "Service":
        kind = spec.get("type") or "ClusterIP"
        external = spec.get("externalIPs") or []
        ingress = [
            i.get("ip") or i.get("hostname")
            for i in (status.get("loadBalancer") or {}).get("ingress") or []
        ]
        return {
            "type": kind,
            "clusterIP": spec.get("clusterIP") or "<none>",
            "externalIP": ",".join([*external, *ingress])
            or ("<pending>" if kind == "LoadBalancer" else "<none>"),
            "ports": _ports(spec),
            "selector": _selector_text(spec.get("selector")),
        }[what]
    if what == "phase":
        return str(status.get("phase") or "Active")
    if what == "nodeStatus":  # kubectl's printNode: Ready / NotReady / Unknown
        found = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
        words = [("Ready" if c.get("status") == "True" else "NotReady") for c in found[:1]]
        words = words or ["Unknown"]
        if spec.get("unschedulable"):
            words.append("SchedulingDisabled")
        return ",".join(words)
    if what == "roles":
        labels = meta.get("labels") or {}
        prefix = "node-role.kubernetes.io/"
        roles = {k[len(prefix) :] for k in labels if k.startswith(prefix)}
        if "kubernetes.io/role" in labels:
            roles.add(labels["kubernetes.io/role"])
        return ",".join(sorted(r for r in roles if r)) or "<none>"
    info = status.get("nodeInfo") or {}
    if what in ("kubeletVersion", "osImage", "kernelVersion", "containerRuntimeVersion"):
        default = "" if what == "kubeletVersion" else "<unknown>"
        return str(info.get(what) or default)
    kind = "InternalIP" if what == "internalIP" else "ExternalIP"
    addresses = status.get("addresses") or []
    return next((a["address"] for a in addresses if a.get("type") == kind), "<none>")


def _custom_cell(what: str, obj: Mapping[str, Any], now: float) -> str:
    kind, _, path = what.partition(":")
    try:
        found = jsonpath.find(path, obj)
    except jsonpath.JsonPathError:
        return ""
    if not found:
        return ""
    value = found[0]
    if kind == "date":
        return _since(value, now)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def table(
    items: Sequence[Mapping[str, Any]],
    *,
    kind: str,
    api_version: str,
    wide: bool,
    all_namespaces: bool,
    now: float | None = None,
) -> tuple[list[str], list[list[str]]]:
    """kubectl's header and rows for ``items`` of one kind (NAMESPACE first with ``-A``)."""
    now = time.time() if now is None else now
    columns = [c for c in columns_for(kind, _group(api_version)) if wide or c[2] == 0]
    headers = ["NAME", *(c[0] for c in columns)]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in items:
        meta = obj.get("metadata") or {}
        cells = [
            _custom_cell(what, obj, now) if ":" in what else _builtin_cell(what, obj, now)
            for _, what, _ in columns
        ]
        row = [str(meta.get("name", "")), *cells]
        if all_namespaces:
            row.insert(0, str(meta.get("namespace", "")))
        rows.append(row)
    return headers, rows


def generate_columns(crds: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``Kind.group`` -> the storage version's additionalPrinterColumns (for
    ``printer_columns.json``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for crd in crds:
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec.get("versions") or []:
            if version.get("storage"):
                out[f"{spec['names']['kind']}.{spec['group']}"] = [
                    {k: c[k] for k in ("name", "type", "jsonPath", "priority") if k in c}
                    for c in version.get("additionalPrinterColumns") or []
                ]
    return dict(sorted(out.items()))
