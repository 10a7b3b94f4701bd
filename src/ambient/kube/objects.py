"""The CLI's object commands against a cluster: ``get``, ``apply``, ``delete``, ``label``.

Objects are read from and written to the API server (nothing goes through the
control plane), in their API form: ``get -o yaml`` drops ``managedFields`` as kubectl
does, so the output applies back unchanged. Tables have kubectl's columns for the
kinds kubectl knows (Pods, Services, Namespaces, Nodes, Deployments) and Gateway
API's printer columns for Gateways; other kinds show NAMESPACE, NAME, AGE.

``apply`` is server-side apply with field manager ``ambient`` (``kubectl apply
--server-side`` prints ``serverside-applied``); each object is also run through the
mesh's own validation first, and what the control plane would refuse is printed as a
warning (the API server decides what is stored; the control plane ignores, or for
policies fails closed on, what its validation refuses).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.convert import convert, convertible, describe, view
from ambient.kube.kinds import DEPLOYMENT, WATCHED, KindInfo, by_kind

__all__ = [
    "APPLY_MANAGER",
    "apply_documents",
    "delete_documents",
    "get_objects",
    "kind_of",
    "label_object",
    "table",
]

APPLY_MANAGER = "ambient"
_SHORT = {
    "po": "Pod",
    "svc": "Service",
    "ns": "Namespace",
    "no": "Node",
    "sa": "ServiceAccount",
    "we": "WorkloadEntry",
    "se": "ServiceEntry",
    "ap": "AuthorizationPolicy",
    "pa": "PeerAuthentication",
    "ra": "RequestAuthentication",
    "gtw": "Gateway",
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "deploy": "Deployment",
}
_KINDS: dict[str, KindInfo] = {}
for _info in (*WATCHED, DEPLOYMENT):
    for _word in (_info.kind.lower(), _info.plural, f"{_info.plural}.{_info.group}"):
        _KINDS[_word] = _info
for _word, _kind in _SHORT.items():
    _KINDS[_word] = by_kind(_kind)


def kind_of(word: str) -> KindInfo:
    """``pods``, ``po``, ``Pod``, ``httproutes.gateway.networking.k8s.io`` -> its KindInfo;
    ``KubeError`` naming the known kinds otherwise."""
    found = _KINDS.get(word.lower())
    if found is None:
        known = ", ".join(sorted({i.plural for i in _KINDS.values()}))
        raise KubeError(f"unknown kind {word!r}; known: {known}")
    return found


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


async def get_objects(
    client: KubeClient,
    info: KindInfo,
    *,
    namespace: str | None,
    name: str | None = None,
    selector: str | None = None,
) -> list[dict[str, Any]]:
    """One object (``name``) or every one of ``namespace`` (None: all namespaces), as the
    API serves them (without ``managedFields``)."""
    if name is not None:
        try:
            return [_clean(await client.get(info.path(namespace, name)))]
        except KubeError as err:
            if err.code == 404:
                where = f" in namespace {namespace}" if namespace and info.namespaced else ""
                raise KubeError(f'{info.kind.lower()} "{name}" not found{where}', 404) from None
            raise
    params = {"labelSelector": selector} if selector else {}
    items, _ = await client.list(info.path(namespace), params)
    kind = info.kind
    for item in items:  # lists carry no kind/apiVersion per item
        item.setdefault("apiVersion", info.api_version)
        item.setdefault("kind", kind)
    return [_clean(i) for i in items]


# -- tables --------------------------------------------------------------------------------


def _age(meta: Mapping[str, Any], now: float) -> str:
    text = meta.get("creationTimestamp")
    if not text:
        return "<unknown>"
    created = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    seconds = max(0, int(now - created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pod_row(obj: Mapping[str, Any], wide: bool) -> list[str]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    phase = status.get("phase") or "Pending"
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    row = [f"{ready}/{len(containers)}", phase, str(restarts)]
    if wide:
        row += [status.get("podIP") or "<none>", spec.get("nodeName") or "<none>"]
    return row


def _ports(spec: Mapping[str, Any]) -> str:
    parts = []
    for port in spec.get("ports") or []:
        text = str(port.get("port"))
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _condition(obj: Mapping[str, Any], kind: str) -> str:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return str(item.get("status"))
    return "Unknown"


def _columns(info: KindInfo, wide: bool) -> list[str]:
    if info.kind == "Pod":
        return ["READY", "STATUS", "RESTARTS", "AGE", *(["IP", "NODE"] if wide else [])]
    if info.kind == "Service":
        return ["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    if info.kind == "Namespace":
        return ["STATUS", "AGE"]
    if info.kind == "Node":
        return ["STATUS", "AGE", *(["INTERNAL-IP"] if wide else [])]
    if info.kind == "Deployment":
        return ["READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if info.kind == "Gateway":
        return ["CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
    return ["AGE"]


def _cells(info: KindInfo, obj: Mapping[str, Any], wide: bool, now: float) -> list[str]:
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    age = _age(meta, now)
    if info.kind == "Pod":
        row = _pod_row(obj, wide)
        return [*row[:3], age, *row[3:]]
    if info.kind == "Service":
        return [
            spec.get("type", "ClusterIP"),
            spec.get("clusterIP") or "<none>",
            ",".join(spec.get("externalIPs") or []) or "<none>",
            _ports(spec),
            age,
        ]
    if info.kind == "Namespace":
        return [status.get("phase", "Active"), age]
    if info.kind == "Node":
        ready = "Ready" if _condition(obj, "Ready") == "True" else "NotReady"
        addresses = status.get("addresses") or []
        internal = next((a.get("address") for a in addresses if a.get("type") == "InternalIP"), "")
        return [ready, age, *([internal or "<none>"] if wide else [])]
    if info.kind == "Deployment":
        want = spec.get("replicas", 1)
        return [
            f"{status.get('readyReplicas', 0)}/{want}",
            str(status.get("updatedReplicas", 0)),
            str(status.get("availableReplicas", 0)),
            age,
        ]
    if info.kind == "Gateway":
        addresses = status.get("addresses") or []
        return [
            spec.get("gatewayClassName", ""),
            addresses[0].get("value", "") if addresses else "",
            _condition(obj, "Programmed"),
            age,
        ]
    return [age]


def table(
    info: KindInfo, items: Iterable[Mapping[str, Any]], *, wide: bool, all_namespaces: bool
) -> tuple[list[str], list[list[str]]]:
    """kubectl's headers and rows for ``items`` (NAMESPACE first with ``all_namespaces``)."""
    now = time.time()
    headers = ["NAME", *_columns(info, wide)]
    if all_namespaces and info.namespaced:
        headers.insert(0, "NAMESPACE")
    rows = []
    for obj in items:
        meta = obj.get("metadata") or {}
        row = [meta.get("name", ""), *_cells(info, obj, wide, now)]
        if all_namespaces and info.namespaced:
            row.insert(0, meta.get("namespace", ""))
        rows.append(row)
    return headers, rows


# -- changes -------------------------------------------------------------------------------


def _documents(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise KubeError(
                f"expected a mapping with apiVersion and kind, got {type(doc).__name__}"
            )
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            out += [i for i in doc.get("items") or [] if isinstance(i, dict)]
        else:
            out.append(doc)
    return out


def _target(doc: Mapping[str, Any], default_namespace: str) -> tuple[KindInfo, str | None, str]:
    kind, meta = doc.get("kind"), doc.get("metadata") or {}
    if not isinstance(kind, str) or not isinstance(meta.get("name"), str):
        raise KubeError("every document needs kind and metadata.name")
    info = kind_of(kind)
    namespace = (meta.get("namespace") or default_namespace) if info.namespaced else None
    return info, namespace, meta["name"]


async def apply_documents(
    client: KubeClient, text: str, default_namespace: str
) -> tuple[list[str], list[str]]:
    """Server-side apply each document of ``text``; (result lines, warnings)."""
    lines, warnings = [], []
    for doc in _documents(text):
        info, namespace, name = _target(doc, default_namespace)
        body = {**doc, "metadata": {**doc["metadata"]}}
        if namespace is not None:
            body["metadata"]["namespace"] = namespace
        if convertible(info.kind):
            checked = convert(view(info, body))
            for issue in checked.errors:
                warnings.append(
                    f"{describe(info.kind, namespace or '', name, issue)} "
                    "(the control plane will not use it as written)"
                )
        await client.request(
            "PATCH",
            info.path(namespace, name),
            params={"fieldManager": APPLY_MANAGER, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        lines.append(f"{info.kind.lower()}/{name} serverside-applied")
    return lines, warnings


async def delete_documents(client: KubeClient, text: str, default_namespace: str) -> list[str]:
    """Delete the object each document of ``text`` names; one line each."""
    lines = []
    for doc in _documents(text):
        info, namespace, name = _target(doc, default_namespace)
        try:
            await client.delete(info.path(namespace, name))
            lines.append(f'{info.kind.lower()} "{name}" deleted')
        except KubeError as err:
            if err.code != 404:
                raise
            lines.append(f'{info.kind.lower()} "{name}" not found')
    return lines


async def label_object(
    client: KubeClient,
    info: KindInfo,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str | None],
) -> None:
    """Set (or with None, remove) labels, as ``kubectl label --overwrite``."""
    await client.patch(
        info.path(namespace if info.namespaced else None, name),
        {"metadata": {"labels": dict(labels)}},
    )
