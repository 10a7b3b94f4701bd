"""The commands against a Kubernetes cluster (``--kubeconfig``/``--context``/``$KUBECONFIG``).

Each command module asks ``app.target(ctx)`` which mesh the command line names, and
for a cluster calls the function here: everything goes through the API server (the
objects, the control plane's heartbeat Lease for ``status``, the Nodes and ztunnel
pods for ``zc``), so the commands work from anywhere the kubeconfig works.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

import click

from ambient.cli.output import print_json, print_table
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config

__all__ = [
    "analyze_cluster",
    "apply",
    "config_dumps",
    "context_namespace",
    "delete",
    "exec_info",
    "get",
    "label",
    "objects",
    "run",
    "scale",
    "status",
    "waypoint_apply",
    "waypoint_delete",
    "waypoint_gateways",
    "ztunnel_admins",
]

T = TypeVar("T")
_WAYPOINT_CLASS = "istio-waypoint"


def _fail(message: str, code: int = 1) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def run(target: ClusterTarget, body: Callable[[KubeClient], Awaitable[T]]) -> T:
    """``body(client)`` against the cluster; a ``KubeError`` ends the command with its message."""
    try:
        config = load_config(target)
    except KubeError as err:
        _fail(str(err))

    async def main() -> T:
        client = KubeClient(config)
        try:
            return await body(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except KubeError as err:
        _fail(str(err))


def context_namespace(target: ClusterTarget) -> str:
    """The kubeconfig context's namespace (``default`` when it names none)."""
    try:
        return load_config(target).namespace
    except KubeError as err:
        _fail(str(err))


def exec_info(target: ClusterTarget, namespace: str, name: str) -> dict[str, Any]:
    """How pod ``name`` (or ``deploy/NAME``) runs on its node, from its kubelet."""
    from ambient.kube.podexec import exec_target

    return run(target, lambda client: exec_target(client, namespace, name))


# -- status --------------------------------------------------------------------------------


def _status_rows(status: Mapping[str, Any]) -> list[list[str]]:
    alive = bool(status.get("alive"))
    ready = alive and bool(status.get("ready"))
    age = status.get("renewed")
    detail = (
        f"{status.get('holder', '?')}, heartbeat {age:.0f}s ago; "
        f"{status.get('workloads', 0)} workloads, {status.get('services', 0)} services, "
        f"{status.get('subscribers', 0)} subscribers"
        if age is not None
        else "no heartbeat"
    )
    if not alive:
        detail = f"not running (last heartbeat {age:.0f}s ago)" if age is not None else detail
    rows = [["controlplane", "Ready" if ready else "NotReady", detail]]
    if not alive:
        return rows  # what it watched is stale
    for watch in status.get("watches") or []:
        state = "Synced" if watch.get("synced") else "NotSynced"
        text = f"{watch.get('objects', 0)} objects"
        if not watch.get("served", True):
            state, text = "NotServed", "the API server does not serve it (CRD missing?)"
        if watch.get("error") and watch.get("served", True):
            text += f"; {watch['error']}"
        rows.append([f"watch/{watch.get('kind')}", state, text])
    invalid = status.get("invalidCount", 0)
    if invalid:
        names = ", ".join(
            f"{i['kind']} {i['namespace']}/{i['name']}".replace(" /", " ")
            for i in (status.get("invalid") or [])[:5]
        )
        rows.append(["invalid objects", str(invalid), f"{names} (ambient analyze shows why)"])
    return rows


def status(target: ClusterTarget, wait: float | None, output: str) -> None:
    """``ambient status``: the control plane's readiness and what it watches, from its
    heartbeat Lease (``kube.heartbeat``)."""
    from ambient.kube.heartbeat import read_status

    deadline = time.monotonic() + (wait or 0)
    while True:
        found = run(target, read_status)
        ready = bool(found and found.get("alive") and found.get("ready"))
        if ready or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if found is None:
        _fail(
            "no control plane has run for this cluster (no Lease istio-system/ambient-controlplane): "
            "start one with `ambient controlplane --kubeconfig ...`"
        )
    if output == "json":
        print_json(found)
    else:
        print_table(["COMPONENT", "STATUS", "DETAIL"], _status_rows(found))
    if not found.get("alive"):
        _fail("the control plane is not running (its heartbeat Lease is stale)")
    if wait is not None and not ready:
        _fail(f"not ready after {wait:g}s")


# -- objects -------------------------------------------------------------------------------


def get(
    target: ClusterTarget,
    kind: str,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str,
    selector: str | None = None,
) -> None:
    """``ambient get``: the API server's table (what kubectl prints), or the objects in
    their API form."""
    from ambient.cli.get import print_objects
    from ambient.cli.output import print_kube_table
    from ambient.kube.objects import get_objects, kind_of, server_table

    try:
        info = kind_of(kind)
    except KubeError as err:
        _fail(str(err))
    scope = None if all_namespaces else namespace or context_namespace(target)
    if output in ("table", "wide"):
        headers, rows = run(
            target,
            lambda c: server_table(
                c, info, namespace=scope, name=name, selector=selector, wide=output == "wide"
            ),
        )
        if not rows:
            where = "" if scope is None or not info.namespaced else f" in {scope} namespace"
            click.echo(f"No resources found{where}.", err=True)
            return
        print_kube_table(headers, rows)
        return
    items = run(
        target,
        lambda c: get_objects(c, info, namespace=scope, name=name, selector=selector),
    )
    data: Any = (
        items[0]
        if name
        else {
            "apiVersion": "v1",
            "items": items,
            "kind": "List",
            "metadata": {"resourceVersion": ""},
        }
    )
    print_objects(data, output)


def apply(target: ClusterTarget, text: str, namespace: str | None) -> None:
    from ambient.kube.objects import apply_documents

    default = namespace or context_namespace(target)
    lines, warnings = run(target, lambda c: apply_documents(c, text, default))
    for line in lines:
        click.echo(line)
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def delete(target: ClusterTarget, text: str, namespace: str | None) -> None:
    from ambient.kube.objects import delete_documents

    default = namespace or context_namespace(target)
    for line in run(target, lambda c: delete_documents(c, text, default)):
        click.echo(line)


def label(
    target: ClusterTarget,
    kind: str,
    name: str,
    namespace: str | None,
    labels: Mapping[str, str | None],
) -> str:
    from ambient.kube.objects import kind_of, label_object

    try:
        info = kind_of(kind)
    except KubeError as err:
        _fail(str(err))
    scope = namespace or context_namespace(target)
    run(target, lambda c: label_object(c, info, scope, name, labels))
    return f"{info.kind.lower()}/{name} labeled"


# -- ztunnel-config --------------------------------------------------------------------------


def config_dumps(target: ClusterTarget, node: str | None) -> list[dict[str, Any]]:
    """The ``/config_dump`` of ``node``'s ztunnel (None: every node's), found through the
    cluster (``kube.ztunnels``)."""
    from ambient.kube import ztunnels

    async def body(client: KubeClient) -> list[dict[str, Any]]:
        endpoints = await ztunnels.ztunnel_endpoints(client, node)
        if not endpoints:
            raise KubeError(
                f"no ztunnel found: no running pod labelled {ztunnels.ZTUNNEL_LABEL} in istio-system "
                f"and no Node annotated {ztunnels.ADMIN_ANNOTATION}"
            )
        return await ztunnels.config_dumps(endpoints)

    return run(target, body)


# -- waypoints -------------------------------------------------------------------------------


async def _waypoints(client: KubeClient, namespace: str | None) -> list[dict[str, Any]]:
    from ambient.kube.kinds import GATEWAY

    items, _ = await client.list(GATEWAY.path(namespace))
    return [g for g in items if (g.get("spec") or {}).get("gatewayClassName") == _WAYPOINT_CLASS]


def _condition(gateway: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for item in (gateway.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {"status": "Unknown", "reason": "", "message": ""}


def waypoint_apply(
    target: ClusterTarget, manifest: dict[str, Any], enroll_namespace: bool, wait: float | None
) -> None:
    from ambient.kube.kinds import GATEWAY, NAMESPACE
    from ambient.kube.objects import APPLY_MANAGER

    meta = manifest["metadata"]
    ns, name = meta["namespace"], meta["name"]

    async def body(client: KubeClient) -> bool:
        await client.request(
            "PATCH",
            GATEWAY.path(ns, name),
            params={"fieldManager": APPLY_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        if enroll_namespace:
            labels = {"metadata": {"labels": {"istio.io/use-waypoint": name}}}
            await client.patch(NAMESPACE.path(None, ns), labels)
        if wait is None:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            gateway = await client.get(GATEWAY.path(ns, name))
            if _condition(gateway, "Programmed").get("status") == "True":
                return True
            await asyncio.sleep(0.5)
        return False

    programmed = run(target, body)
    click.echo(f"waypoint {ns}/{name} applied")
    if enroll_namespace:
        click.echo(f'namespace {ns} labeled with "istio.io/use-waypoint={name}"')
    if not programmed:
        _fail(f"waypoint {ns}/{name} is not programmed after {wait:g}s (ambient waypoint status)")


def waypoint_gateways(target: ClusterTarget, namespace: str | None) -> list[dict[str, Any]]:
    """The waypoint Gateways of ``namespace`` (None: every namespace's)."""
    return run(target, lambda c: _waypoints(c, namespace))


def waypoint_delete(target: ClusterTarget, namespace: str, names: list[str] | None) -> list[str]:
    """Delete waypoints by name (None: all of ``namespace``); the names deleted."""
    from ambient.kube.kinds import GATEWAY

    async def body(client: KubeClient) -> list[str]:
        existing = sorted(g["metadata"]["name"] for g in await _waypoints(client, namespace))
        wanted = existing if names is None else names
        missing = [n for n in wanted if n not in existing]
        if missing:
            raise KubeError(f"no waypoint named {', '.join(missing)} in namespace {namespace}")
        for name in wanted:
            await client.delete(GATEWAY.path(namespace, name))
        return wanted

    return run(target, body)


# -- analyze ---------------------------------------------------------------------------------


def analyze_cluster(
    target: ClusterTarget, namespace: str | None, all_namespaces: bool
) -> tuple[list[Any], str]:
    """(messages, scope) as istioctl analyze: ``-A`` every namespace, ``-n`` one, by default
    the kubeconfig context's."""
    from ambient.kube.analyze import analyze_cluster as analyze

    scope = None if all_namespaces else namespace or context_namespace(target)
    messages = run(target, lambda c: analyze(c, scope))
    return messages, "all namespaces" if scope is None else f"namespace: {scope}"


# -- scale and wait --------------------------------------------------------------------------


def scale(target: ClusterTarget, namespace: str | None, name: str, replicas: int) -> None:
    """Patch a Deployment's ``scale`` subresource (what ``kubectl scale`` does)."""
    from ambient.kube.kinds import DEPLOYMENT

    scope = namespace or context_namespace(target)

    async def body(client: KubeClient) -> None:
        try:
            await client.patch(
                DEPLOYMENT.path(scope, name) + "/scale", {"spec": {"replicas": replicas}}
            )
        except KubeError as err:
            if err.code == 404:
                raise KubeError(f'deployments.apps "{name}" not found', 404) from None
            raise

    run(target, body)


def objects(
    target: ClusterTarget, kind: str, namespace: str, selector: str | None
) -> list[dict[str, Any]]:
    """Every object of ``kind`` in ``namespace`` (``ambient wait``)."""
    from ambient.kube.objects import get_objects, kind_of

    try:
        info = kind_of(kind)
    except KubeError as err:
        _fail(str(err))
    return run(target, lambda c: get_objects(c, info, namespace=namespace, selector=selector))


def ztunnel_pod_node(target: ClusterTarget, name: str, namespace: str | None) -> str:
    """The node of the ztunnel pod ``name`` (istioctl's ``zc`` argument); a pod that is
    not a ztunnel's is refused as istioctl refuses it."""
    from ambient.install.manifests import NAMESPACE
    from ambient.kube import ztunnels
    from ambient.kube.kinds import POD

    where = namespace or NAMESPACE

    async def body(client: KubeClient) -> str:
        pod = await client.get(POD.path(where, name))
        key, _, value = ztunnels.ZTUNNEL_LABEL.partition("=")
        labels = (pod.get("metadata") or {}).get("labels") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if labels.get(key) != value or not node:
            raise KubeError(f"this command is only supported by Ztunnel proxies: {name}")
        return str(node)

    return run(target, body)


def ztunnel_admins(target: ClusterTarget, node: str | None) -> list[tuple[str, str, int]]:
    """(name, host, port) of the admin port of ``node``'s ztunnel (None: every node's)."""
    from urllib.parse import urlsplit

    from ambient.kube import ztunnels

    endpoints = run(target, lambda c: ztunnels.ztunnel_endpoints(c, node))
    out = []
    for endpoint in endpoints:
        url = urlsplit(endpoint.url)
        if endpoint.source.startswith("pod "):
            namespace, _, pod = endpoint.source.removeprefix("pod ").partition("/")
            name = f"{pod}.{namespace}"
        else:
            name = f"ztunnel@{endpoint.node}"
        out.append((name, url.hostname or "", url.port or ztunnels.ADMIN_PORT))
    return out
