"""An API server's objects as the mesh's typed objects, through the folder mode's loader.

Two steps per object:

- ``view``: what the mesh reads of it, as a document the loader accepts. Metadata
  keeps name, namespace, labels and annotations (without kubectl's
  ``last-applied-configuration``); a Pod keeps its containers' names and ports, its
  service account, node, host networking, ``podIP``/``hostIP``/``phase``, its
  ``Ready`` condition and, for a generated pod, its controller owner reference (kind
  and name, which name its workload: ``ambient.kube.owners``); a Service its ports,
  selector and ``clusterIP`` (and type only for ExternalName); the Istio and Gateway API kinds their ``spec``. The view is also
  the change detector (an event whose view is unchanged, such as a status write or a
  kubelet's container status update, changes nothing) and, for the L7 kinds, the
  manifest sent to waypoints.
- ``convert``: the view through the loader's schemas (``parse_object``) with the
  folder mode's registry, except for Pods (``CLUSTER_POD``: no command required, no
  ``node-1`` default). The API server already checked its own schemas; what fails
  here is what the mesh's stricter checks refuse (a CIDR that is no CIDR, a field
  the mesh does not support...). Reference checks across objects are left to
  ``ambient analyze``: in a cluster the other object may simply not have arrived yet.

Decisions where the brief is silent:

- An invalid object is left out of the index (as if absent) and reported, except the
  two security kinds whose absence would open traffic: an invalid
  AuthorizationPolicy is enforced as a fail-closed stand-in at the same scope
  (``selector``/``targetRefs`` if those parse, else its whole namespace): for ALLOW
  an ALLOW with no rules (allows nothing), for DENY or CUSTOM a DENY of everything;
  AUDIT has no stand-in. An invalid PeerAuthentication is enforced as STRICT at its
  scope. Istio's webhook would have refused such objects; istiod, for a policy it
  cannot fully translate for ztunnel, likewise errs towards denying.
- A pod is ready when its ``Ready`` condition is ``True`` and it is not being
  deleted (Istio's ambient index: ``IsPodReady`` and no ``deletionTimestamp``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ambient.config.loader import parse_object
from ambient.config.pods import CLUSTER_POD
from ambient.config.registry import DEFAULT_REGISTRY, Registry
from ambient.config.resources import Pod, Resource
from ambient.config.schema import Issue, Report, render_path
from ambient.kube.kinds import KindInfo
from ambient.kube.owners import controller_of, workload_of

__all__ = [
    "LAST_APPLIED",
    "Converted",
    "cluster_registry",
    "convert",
    "convertible",
    "describe",
    "view",
]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_STANDIN_KINDS = ("AuthorizationPolicy", "PeerAuthentication")


@functools.cache
def cluster_registry() -> Registry:
    """The folder mode's kinds, with Pods read as an API server serves them."""
    registry = DEFAULT_REGISTRY.copy()
    registry.override(("v1",), "Pod", CLUSTER_POD)
    return registry


def convertible(kind: str) -> bool:
    """Whether the loader has a schema for ``kind`` (else it is watched for status only)."""
    return cluster_registry().lookup(kind) is not None


def _meta(raw: Mapping[str, Any], namespaced: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": raw.get("name")}
    if namespaced:
        meta["namespace"] = raw.get("namespace")
    labels = raw.get("labels")
    if labels:
        meta["labels"] = labels
    annotations = raw.get("annotations")
    if annotations:
        kept = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        if kept:
            meta["annotations"] = kept
    return meta


def _pod(raw: Mapping[str, Any], doc: dict[str, Any]) -> None:
    spec = raw.get("spec") or {}
    containers = []
    for container in spec.get("containers") or ():
        entry: dict[str, Any] = {"name": container.get("name")}
        ports = container.get("ports")
        if ports:
            entry["ports"] = [
                {k: p[k] for k in ("containerPort", "name", "protocol") if k in p} for p in ports
            ]
        containers.append(entry)
    pod_spec: dict[str, Any] = {"containers": containers}
    for key in ("serviceAccountName", "nodeName", "hostNetwork"):
        if spec.get(key) is not None:
            pod_spec[key] = spec[key]
    status = raw.get("status") or {}
    pod_status: dict[str, Any] = {
        k: status[k] for k in ("podIP", "hostIP", "phase") if status.get(k)
    }
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            pod_status["conditions"] = [{"type": "Ready", "status": condition.get("status")}]
    meta = raw.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        doc["metadata"]["deletionTimestamp"] = meta["deletionTimestamp"]
    controller = controller_of(meta)
    if controller is not None:  # what names its workload (ambient.kube.owners)
        doc["metadata"]["generateName"] = meta["generateName"]
        doc["metadata"]["ownerReferences"] = [{**controller, "controller": True}]
    doc["spec"] = pod_spec
    if pod_status:
        doc["status"] = pod_status


def _service(raw: Mapping[str, Any], doc: dict[str, Any]) -> None:
    spec = raw.get("spec") or {}
    keep = ("name", "protocol", "port", "targetPort", "appProtocol")
    out: dict[str, Any] = {}
    if spec.get("ports"):
        out["ports"] = [{k: p[k] for k in keep if k in p} for p in spec["ports"]]
    for key in ("selector", "clusterIP"):
        if spec.get(key):
            out[key] = spec[key]
    if spec.get("type") == "ExternalName":
        out["type"] = "ExternalName"
        out["externalName"] = spec.get("externalName")
    doc["spec"] = out


def _node(raw: Mapping[str, Any], doc: dict[str, Any]) -> None:
    status = raw.get("status") or {}
    addresses = [a.get("address") for a in status.get("addresses") or () if a.get("address")]
    internal = [
        a.get("address") for a in status.get("addresses") or () if a.get("type") == "InternalIP"
    ]
    doc["status"] = {"addresses": internal or addresses}


def view(info: KindInfo, raw: Mapping[str, Any]) -> dict[str, Any]:
    """What the mesh reads of ``raw`` (see the module docstring)."""
    doc: dict[str, Any] = {
        "apiVersion": raw.get("apiVersion") or info.api_version,
        "kind": info.kind,
        "metadata": _meta(raw.get("metadata") or {}, info.namespaced),
    }
    if info.kind == "Pod":
        _pod(raw, doc)
    elif info.kind == "Service":
        _service(raw, doc)
    elif info.kind == "Node":
        _node(raw, doc)
    elif info.kind == "ConfigMap":  # only the mesh config's YAML matters
        data = raw.get("data") or {}
        if isinstance(data, Mapping) and isinstance(data.get("mesh"), str):
            doc["data"] = {"mesh": data["mesh"]}
    elif info.kind not in ("Namespace", "ServiceAccount") and raw.get("spec") is not None:
        doc["spec"] = raw["spec"]
    return doc


def pod_ready(doc: Mapping[str, Any]) -> bool:
    """A pod's view: ``Ready`` and not being deleted."""
    if doc.get("metadata", {}).get("deletionTimestamp"):
        return False
    conditions = doc.get("status", {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass(frozen=True)
class Converted:
    """A view's typed object (None if invalid), its problems, and whether ``obj`` is a
    fail-closed stand-in for an invalid object (``standin``: the stand-in's view)."""

    obj: Resource | None
    errors: tuple[Issue, ...] = ()
    warnings: tuple[Issue, ...] = ()
    standin: dict[str, Any] | None = None


def convert(doc: Mapping[str, Any]) -> Converted:
    """``doc`` (a ``view``) through the loader (see the module docstring)."""
    report = Report()
    obj = parse_object(doc, cluster_registry(), report)
    errors = tuple(i for i in report.issues if not i.warning)
    warnings = tuple(i for i in report.issues if i.warning)
    if isinstance(obj, Pod):
        meta = doc.get("metadata") or {}
        obj = dataclasses.replace(
            obj,
            status=dataclasses.replace(obj.status, ready=pod_ready(doc)),
            workload=workload_of(obj.meta.name, obj.meta.labels, controller_of(meta)),
        )
    if obj is None and doc.get("kind") in _STANDIN_KINDS:
        standin = _standin(doc)
        if standin is not None:
            return Converted(standin[0], errors, warnings, standin[1])
    return Converted(obj, errors, warnings)


def _standin(doc: Mapping[str, Any]) -> tuple[Resource, dict[str, Any]] | None:
    spec = doc.get("spec") if isinstance(doc.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    if doc.get("kind") == "AuthorizationPolicy":
        action = spec.get("action", "ALLOW")
        if action == "AUDIT":
            return None
        body: dict[str, Any] = {"action": "ALLOW"}
        if action != "ALLOW":
            body = {"action": "DENY", "rules": [{}]}
        scope = {k: spec[k] for k in ("selector", "targetRefs", "targetRef") if k in spec}
    else:
        body = {"mtls": {"mode": "STRICT"}}
        scope = {k: spec[k] for k in ("selector",) if k in spec}
    for candidate in (scope, {}):
        standin = {**doc, "spec": {**candidate, **body}}
        obj = parse_object(standin, cluster_registry(), Report())
        if obj is not None:
            return obj, standin
    return None


def describe(kind: str, namespace: str, name: str, issue: Issue) -> str:
    """``HTTPRoute shop/r: spec.rules[0].matches: problem`` (one line)."""
    where = f"{namespace}/{name}" if namespace else name
    path = render_path(issue.path)
    return (
        f"{kind} {where}: {path}: {issue.message}" if path else f"{kind} {where}: {issue.message}"
    )
