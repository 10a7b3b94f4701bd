"""kubectl's verbs on the running mesh: ``apply``, ``delete``, ``label``, ``get``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from ambient.cli import jsonpath
from ambient.cli.app import CONTEXT, call, fail, target, target_options
from ambient.cli.output import print_json, print_table

__all__ = ["apply", "delete", "get", "label"]


def _read_manifest(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


@click.command(context_settings=CONTEXT)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="YAML file, or - for stdin."
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="A cluster: for objects that name none (default: the context's).",
)
@target_options
@click.pass_context
def apply(
    ctx: click.Context, files: tuple[str, ...], namespace: str | None, state_dir: str | None
) -> None:
    """Create or update objects in the running mesh (a cluster: server-side apply)."""
    cluster_target = target(ctx)
    for path in files:
        if cluster_target is not None:
            from ambient.cli import cluster

            cluster.apply(cluster_target, _read_manifest(path)[0], namespace)
            continue
        text, name = _read_manifest(path)
        answer = call(ctx, "POST", "/apply", {"text": text, "filename": name})
        for line in answer["result"]:
            click.echo(line)
        for warning in answer.get("warnings", []):
            click.secho(f"warning: {warning}", fg="yellow", err=True)


@click.command(context_settings=CONTEXT)
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="YAML file, or - for stdin."
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="A cluster: for objects that name none (default: the context's).",
)
@target_options
@click.pass_context
def delete(
    ctx: click.Context, files: tuple[str, ...], namespace: str | None, state_dir: str | None
) -> None:
    """Delete the objects a YAML file names from the running mesh."""
    cluster_target = target(ctx)
    for path in files:
        if cluster_target is not None:
            from ambient.cli import cluster

            cluster.delete(cluster_target, _read_manifest(path)[0], namespace)
            continue
        text, name = _read_manifest(path)
        for line in call(ctx, "POST", "/delete", {"text": text, "filename": name})["result"]:
            click.echo(line)


@click.command(context_settings=CONTEXT)
@click.argument(
    "kind",
    type=click.Choice(
        [
            "namespace",
            "ns",
            "pod",
            "po",
            "pods",
            "service",
            "svc",
            "deployment",
            "deploy",
            "workloadentry",
        ]
    ),
)
@click.argument("name")
@click.argument("labels", nargs=-1, required=True)
@click.option(
    "-n", "--namespace", default=None, help="[default: default; a cluster: the context's]"
)
@click.option("--overwrite", is_flag=True, help="Accepted for kubectl compatibility (always on).")
@target_options
@click.pass_context
def label(
    ctx: click.Context,
    kind: str,
    name: str,
    labels: tuple[str, ...],
    namespace: str | None,
    overwrite: bool,
    state_dir: str | None,
) -> None:
    """Set (key=value) or remove (key-) labels, e.g. istio.io/dataplane-mode=ambient."""
    changes: dict[str, str | None] = {}
    for item in labels:
        if item.endswith("-") and "=" not in item:
            changes[item[:-1]] = None
        elif "=" in item:
            changes[item.split("=", 1)[0]] = item.split("=", 1)[1]
        else:
            fail(f"bad label {item!r}: use key=value to set or key- to remove")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        click.echo(cluster.label(cluster_target, kind, name, namespace, changes))
        return
    namespace = namespace or "default"
    for key, change in changes.items():
        call(
            ctx,
            "POST",
            "/label",
            {"kind": kind, "namespace": namespace, "name": name, "key": key, "value": change},
        )
    click.echo(f"{_kind_word(kind)}/{name} labeled")


def _kind_word(kind: str) -> str:
    return {
        "ns": "namespace",
        "po": "pod",
        "pods": "pod",
        "svc": "service",
        "deploy": "deployment",
    }.get(kind, kind)


_GET_KINDS = {
    "pods": "Pod",
    "pod": "Pod",
    "po": "Pod",
    "services": "Service",
    "service": "Service",
    "svc": "Service",
    "namespaces": "Namespace",
    "namespace": "Namespace",
    "ns": "Namespace",
    "deployments": "Deployment",
    "deployment": "Deployment",
    "deploy": "Deployment",
    "serviceaccounts": "ServiceAccount",
    "serviceaccount": "ServiceAccount",
    "sa": "ServiceAccount",
    "workloadentries": "WorkloadEntry",
    "workloadentry": "WorkloadEntry",
    "we": "WorkloadEntry",
    "serviceentries": "ServiceEntry",
    "serviceentry": "ServiceEntry",
    "se": "ServiceEntry",
    "authorizationpolicies": "AuthorizationPolicy",
    "authorizationpolicy": "AuthorizationPolicy",
    "ap": "AuthorizationPolicy",
    "peerauthentications": "PeerAuthentication",
    "peerauthentication": "PeerAuthentication",
    "pa": "PeerAuthentication",
    "gateways": "Gateway",
    "gateway": "Gateway",
    "gtw": "Gateway",
    "httproutes": "HTTPRoute",
    "httproute": "HTTPRoute",
    "grpcroutes": "GRPCRoute",
    "grpcroute": "GRPCRoute",
    "virtualservices": "VirtualService",
    "virtualservice": "VirtualService",
    "vs": "VirtualService",
    "destinationrules": "DestinationRule",
    "destinationrule": "DestinationRule",
    "dr": "DestinationRule",
    "requestauthentications": "RequestAuthentication",
    "requestauthentication": "RequestAuthentication",
    "telemetries": "Telemetry",
    "telemetry": "Telemetry",
}


@click.command(context_settings=CONTEXT)
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Only this namespace.")
@click.option(
    "-A", "--all-namespaces", is_flag=True, help="Every namespace (the default without -n)."
)
@click.option(
    "-o",
    "--output",
    default="table",
    help="table, wide, json, yaml, or jsonpath=TEMPLATE (kubectl's subset).",
)
@click.option("-l", "--selector", default=None, help="A cluster: a label selector.")
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
    """List objects of KIND (pods, services, namespaces, deployments, gateways, ...).

    On a cluster: every kind the mesh reads, from the API server, with kubectl's columns
    (the context's namespace unless -n or -A)."""
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        cluster.get(cluster_target, kind, name, namespace, all_namespaces, output, selector)
        return
    real = _GET_KINDS.get(kind.lower().split(".")[0])
    if real is None:
        fail(f"unknown kind {kind!r}; known: {', '.join(sorted(set(_GET_KINDS.values())))}")
    if output not in ("table", "wide", "json", "yaml") and not output.startswith("jsonpath="):
        fail(f"unknown output format {output!r}: use table, wide, json, yaml or jsonpath=...")
    if real == "Pod":
        _get_pods(ctx, name, namespace, output)
        return
    query = f"/resources?kind={real}" + (f"&namespace={namespace}" if namespace else "")
    items = [i for i in call(ctx, "GET", query) if name is None or i["meta"]["name"] == name]
    if name is not None and not items:
        fail(f"{real.lower()} {name!r} not found")
    if output in ("json", "yaml") or output.startswith("jsonpath="):
        _print_objects(items, name is not None, output)
        return
    rows = []
    for item in items:
        meta = item["meta"]
        labels = ",".join(f"{k}={v}" for k, v in sorted(meta.get("labels", {}).items()))
        row = [meta["name"]] if real == "Namespace" else [meta["namespace"], meta["name"]]
        rows.append([*row, labels or "<none>"])
    headers = ["NAME", "LABELS"] if real == "Namespace" else ["NAMESPACE", "NAME", "LABELS"]
    print_table(headers, rows)


def _print_objects(items: list[dict[str, Any]], single: bool, output: str) -> None:
    """``-o json``: the JSON list the control API returns (scripts rely on it);
    ``-o yaml`` / ``jsonpath``: as kubectl, one object when named, else a ``List``."""
    if output == "json":
        print_json(items)
        return
    objects = [_kube_shape(i) for i in items]
    data: Any = objects[0] if single else {"apiVersion": "v1", "kind": "List", "items": objects}
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        try:
            click.echo(jsonpath.render(output.removeprefix("jsonpath="), data), nl=False)
        except jsonpath.JsonPathError as exc:
            fail(f"bad jsonpath template: {exc}")


def _kube_shape(item: dict[str, Any]) -> dict[str, Any]:
    meta = item.get("meta", {})
    metadata = {k: v for k, v in meta.items() if v not in ({}, None, "")}
    shaped: dict[str, Any] = {
        "apiVersion": item.get("api_version"),
        "kind": item.get("kind"),
        "metadata": metadata,
    }
    for key, value in item.items():
        if key not in ("meta", "api_version", "kind"):
            shaped[key] = value
    return shaped


def _get_pods(ctx: click.Context, name: str | None, namespace: str | None, output: str) -> None:
    pods = call(ctx, "GET", "/pods")
    status = {c["name"]: c for c in call(ctx, "GET", "/status")["components"]}
    rows = []
    selected = []
    for pod in pods:
        if (namespace and pod["namespace"] != namespace) or (name and pod["name"] != name):
            continue
        selected.append(pod)
        component = status.get(f"pod/{pod['namespace']}/{pod['name']}", {})
        rows.append(
            [
                pod["namespace"],
                pod["name"],
                "Running" if component.get("ready") else "NotReady",
                component.get("detail", ""),
                pod["ip"],
                pod["node"],
            ]
        )
    if output != "table" and output != "wide":
        _print_objects(
            [{k: v for k, v in p.items() if k != "env"} for p in selected], False, output
        )
        return
    print_table(["NAMESPACE", "NAME", "STATUS", "CONTAINERS", "IP", "NODE"], rows)
