"""``ambient get``: kubectl's ``get`` on the running mesh or a cluster.

Decisions (kubectl v1.37's behaviour unless said):

- Tables: kubectl's columns (``cli.printers``); on a cluster the API server's own
  table (``kube.objects.server_table``), which is what kubectl prints. ``-o wide``
  adds the priority columns. Names sort as kubectl lists them (namespace, name).
- ``-o yaml|json``: the object in its API form, keys sorted and JSON indented by four
  as kubectl prints them; one object when named, else a ``List``. In folder mode the
  object is the manifest as written plus ``status`` (``cli.folderobjects``), so
  ``get -o yaml | apply -f -`` reports ``unchanged``.
- ``-l``: kubectl's selector syntax (``cli.selectors``); on a cluster the API server
  evaluates it.
- Folder mode without ``-n`` lists every namespace (a state folder has no context
  namespace) with a NAMESPACE column, as ``-A``.
- Nothing found: ``No resources found in NS namespace.`` on stderr, exit 0; a named
  object missing: ``Error from server (NotFound): KIND "NAME" not found``, exit 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from ambient.cli import jsonpath
from ambient.cli.app import CONTEXT, call, fail, target, target_options
from ambient.cli.folderobjects import (
    cluster_ips,
    deployment_status,
    node_object,
    pod_object,
    ztunnel_daemonset,
)
from ambient.cli.output import print_kube_table
from ambient.cli.printers import table
from ambient.cli.selectors import SelectorError, parse_selector
from ambient.local.systempods import ISTIO_NAMESPACE, SYSTEM_NAMESPACE

__all__ = ["KINDS", "folder_objects", "get", "in_namespace", "print_objects", "resolve_kind"]

# word -> (Kind, default apiVersion, plural)
_KIND_INFO: dict[str, tuple[str, str, str]] = {
    "Pod": ("Pod", "v1", "pods"),
    "Service": ("Service", "v1", "services"),
    "Namespace": ("Namespace", "v1", "namespaces"),
    "Node": ("Node", "v1", "nodes"),
    "ServiceAccount": ("ServiceAccount", "v1", "serviceaccounts"),
    "Deployment": ("Deployment", "apps/v1", "deployments"),
    "DaemonSet": ("DaemonSet", "apps/v1", "daemonsets"),
    "WorkloadEntry": ("WorkloadEntry", "networking.istio.io/v1", "workloadentries"),
    "ServiceEntry": ("ServiceEntry", "networking.istio.io/v1", "serviceentries"),
    "VirtualService": ("VirtualService", "networking.istio.io/v1", "virtualservices"),
    "DestinationRule": ("DestinationRule", "networking.istio.io/v1", "destinationrules"),
    "AuthorizationPolicy": ("AuthorizationPolicy", "security.istio.io/v1", "authorizationpolicies"),
    "PeerAuthentication": ("PeerAuthentication", "security.istio.io/v1", "peerauthentications"),
    "RequestAuthentication": (
        "RequestAuthentication",
        "security.istio.io/v1",
        "requestauthentications",
    ),
    "Telemetry": ("Telemetry", "telemetry.istio.io/v1", "telemetries"),
    "Gateway": ("Gateway", "gateway.networking.k8s.io/v1", "gateways"),
    "HTTPRoute": ("HTTPRoute", "gateway.networking.k8s.io/v1", "httproutes"),
    "GRPCRoute": ("GRPCRoute", "gateway.networking.k8s.io/v1", "grpcroutes"),
}
_SHORT = {
    "po": "Pod",
    "svc": "Service",
    "ns": "Namespace",
    "no": "Node",
    "sa": "ServiceAccount",
    "deploy": "Deployment",
    "ds": "DaemonSet",
    "we": "WorkloadEntry",
    "se": "ServiceEntry",
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "ap": "AuthorizationPolicy",
    "pa": "PeerAuthentication",
    "ra": "RequestAuthentication",
    "gtw": "Gateway",
}
KINDS: dict[str, str] = {}
for _kind, (_, _version, _plural) in _KIND_INFO.items():
    KINDS[_kind.lower()] = KINDS[_plural] = _kind
    if "/" in _version:
        KINDS[f"{_plural}.{_version.split('/')[0]}"] = _kind
KINDS.update(_SHORT)


def resolve_kind(word: str) -> str:
    """``pods``, ``po``, ``deploy``, ``gateways.gateway.networking.k8s.io`` -> the Kind."""
    found = KINDS.get(word.lower())
    if found is None:
        known = ", ".join(sorted(p for _, _, p in _KIND_INFO.values()))
        fail(f'the server doesn\'t have a resource type "{word}" (known: {known})')
    return found


def folder_objects(ctx: click.Context, kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind`` in the running mesh, in its API form (``cli.folderobjects``)."""
    manifests = [i["manifest"] for i in call(ctx, "GET", "/manifests")]
    by_key = {
        (m.get("kind"), (m.get("metadata") or {}).get("namespace", ""), m["metadata"]["name"]): m
        for m in manifests
    }
    if kind == "Pod":
        pods = call(ctx, "GET", "/pods") + call(ctx, "GET", "/system-pods")
        return [pod_object(p, by_key) for p in pods]
    if kind == "Node":
        ztunnels = {p["node"]: p for p in call(ctx, "GET", "/system-pods") if p["node"]}
        return [node_object(n, ztunnels.get(n["name"])) for n in call(ctx, "GET", "/nodes")]
    items = [m for m in manifests if m.get("kind") == kind]
    if kind == "DaemonSet":
        nodes = len(call(ctx, "GET", "/nodes"))
        ztunnel = ztunnel_daemonset(call(ctx, "GET", "/system-pods"), nodes)
        items += [ztunnel] if ztunnel else []
    if kind == "Deployment":
        pods = call(ctx, "GET", "/pods")
        for item in items:
            item["status"] = deployment_status(item, pods)
    if kind == "Service":
        vips = cluster_ips(call(ctx, "GET", "/config_dump"))
        for item in items:
            meta = item["metadata"]
            item["_clusterIP"] = vips.get((meta.get("namespace", ""), meta["name"]))
    return items


def in_namespace(obj: dict[str, Any], namespace: str) -> bool:
    """Whether ``obj`` is in ``namespace``; ``istio-system`` also holds the mesh's own
    pods and their DaemonSet (``ambient-system``: ``local.systempods``), as Istio's are
    there."""
    ns = (obj.get("metadata") or {}).get("namespace", namespace)
    if ns == SYSTEM_NAMESPACE and obj.get("kind") in ("Pod", "DaemonSet"):
        return namespace in (SYSTEM_NAMESPACE, ISTIO_NAMESPACE)
    return bool(ns == namespace)


def _sort_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


def print_objects(data: Any, output: str) -> None:
    """``-o json|yaml|jsonpath=...`` as kubectl prints them."""
    if output == "json":
        click.echo(json.dumps(data, indent=4, sort_keys=True))
    elif output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=True), nl=False)
    else:
        try:
            click.echo(jsonpath.render(output.removeprefix("jsonpath="), data), nl=False)
        except jsonpath.JsonPathError as exc:
            fail(f"bad jsonpath template: {exc}")


def _list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def _without_private(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _table_view(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the table sees it: a Service with the address the mesh allocated."""
    if obj.get("_clusterIP") and not (obj.get("spec") or {}).get("clusterIP"):
        return {**obj, "spec": {**(obj.get("spec") or {}), "clusterIP": obj["_clusterIP"]}}
    return obj


@click.command(context_settings=CONTEXT)
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Only this namespace.")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Every namespace (folder mode: the default)."
)
@click.option(
    "-o",
    "--output",
    default="table",
    help="wide, json, yaml, or jsonpath=TEMPLATE (kubectl's subset).",
)
@click.option(
    "-l",
    "--selector",
    default=None,
    help="Label selector: k=v, k!=v, k in (a,b), k notin (a), k, !k.",
)
@target_options
@click.pass_context
def get(
    ctx: click.Context,
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str,
    selector: str | None,
    state_dir: str | None,
) -> None:
    """List objects of KIND (pods, deployments, services, gateways, virtualservices, ...)
    with kubectl's columns, or print them (-o yaml|json) in their API form.

    On a cluster: from the API server (the context's namespace unless -n or -A)."""
    if output not in ("table", "wide", "json", "yaml") and not output.startswith("jsonpath="):
        fail(f"unknown output format {output!r}: use wide, json, yaml or jsonpath=...")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        cluster.get(cluster_target, kind, name, namespace, all_namespaces, output, selector)
        return
    real = resolve_kind(kind)
    try:
        matches = parse_selector(selector or "")
    except SelectorError as exc:
        fail(f"bad selector: {exc}")
    scope = None if all_namespaces else namespace
    cluster_scoped = real in ("Namespace", "Node")
    items = []
    for obj in folder_objects(ctx, real):
        meta = obj.get("metadata") or {}
        if scope and not cluster_scoped and not in_namespace(obj, scope):
            continue
        if name is not None and meta.get("name") != name:
            continue
        if matches(meta.get("labels") or {}):
            items.append(obj)
    items.sort(key=_sort_key)
    plural = _KIND_INFO[real][2]
    if name is not None and not items:
        click.echo(f'Error from server (NotFound): {plural} "{name}" not found', err=True)
        sys.exit(1)
    if output not in ("table", "wide"):
        clean = [_without_private(i) for i in items]
        data: Any = clean[0] if name else _list(clean)
        print_objects(data, output)
        return
    if not items:
        where = f" in {scope} namespace" if scope and not cluster_scoped else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    headers, rows = table(
        [_table_view(i) for i in items],
        kind=real,
        api_version=str(items[0].get("apiVersion") or _KIND_INFO[real][1]),
        wide=output == "wide",
        all_namespaces=scope is None and not cluster_scoped,
    )
    print_kube_table(headers, rows)
