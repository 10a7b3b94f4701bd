"""The CLI's object commands against a cluster: ``get``, ``apply``, ``delete``, ``label``.

Objects are read from and written to the API server (nothing goes through the
control plane), in their API form: ``get -o yaml`` drops ``managedFields`` as kubectl
does, so the output applies back unchanged. Tables are the API server's own
(``server_table``: what kubectl prints).

``apply`` is server-side apply with field manager ``ambient`` (``kubectl apply
--server-side`` prints ``serverside-applied``); each object is also run through the
mesh's own validation first, and what the control plane would refuse is printed as a
warning (the API server decides what is stored; the control plane ignores, or for
policies fails closed on, what its validation refuses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.convert import convert, convertible, describe, view
from ambient.kube.kinds import DAEMONSET, DEPLOYMENT, WATCHED, KindInfo, by_kind

__all__ = [
    "APPLY_MANAGER",
    "apply_documents",
    "delete_documents",
    "get_objects",
    "kind_of",
    "label_object",
    "server_table",
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
    "ds": "DaemonSet",
}
_KINDS: dict[str, KindInfo] = {}
for _info in (*WATCHED, DEPLOYMENT, DAEMONSET):
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

_TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def _cell_text(value: object) -> str:
    """A table cell as kubectl prints it (Go's fmt.Print of the decoded JSON value)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


async def server_table(
    client: KubeClient,
    info: KindInfo,
    *,
    namespace: str | None,
    name: str | None = None,
    selector: str | None = None,
    wide: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """The API server's own table (``meta.k8s.io/v1 Table``, what kubectl prints): the
    built-in printers for core kinds, the CRD's printer columns for the others. Columns
    of priority > 0 only with ``wide``; NAMESPACE first when listing every namespace."""
    params = {"includeObject": "Metadata"}
    if selector and name is None:
        params["labelSelector"] = selector
    try:
        answer = await client.request(
            "GET", info.path(namespace, name), params=params, accept=_TABLE
        )
    except KubeError as err:
        if err.code == 404 and name is not None:
            raise KubeError(f'{info.plural} "{name}" not found', 404) from None
        raise
    columns = answer.get("columnDefinitions") or []
    keep = [i for i, c in enumerate(columns) if wide or not c.get("priority")]
    headers = [str(columns[i]["name"]).upper() for i in keep]
    all_namespaces = namespace is None and info.namespaced
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for row in answer.get("rows") or []:
        cells = row.get("cells") or []
        out = [_cell_text(cells[i]) if i < len(cells) else "" for i in keep]
        if all_namespaces:
            meta = (row.get("object") or {}).get("metadata") or {}
            out.insert(0, str(meta.get("namespace", "")))
        rows.append(out)
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
