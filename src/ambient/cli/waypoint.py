"""``ambient waypoint``: generate, apply, list, status and delete waypoints (as ``istioctl
waypoint``), in the running mesh or, with ``--kubeconfig``, as Gateways of a cluster.

``list`` and ``status`` print istioctl 1.32's tables (``NAME REVISION TRAFFIC TYPE
PROGRAMMED``; ``NAME STATUS TYPE REASON MESSAGE``, NAMESPACE first for every namespace;
tabwriter padding 5; ``No waypoints found.``): the revision is the ``istio.io/rev``
label (``default``), the traffic type the ``istio.io/waypoint-for`` label (``none``
without one, as istioctl prints it).
"""

from __future__ import annotations

from typing import Any

import click
import yaml

from ambient.cli.app import CONTEXT, call, target, target_options
from ambient.cli.zctables import print_go_table

__all__ = ["waypoint", "waypoint_manifest"]

_FOR = click.Choice(["service", "workload", "all", "none"])


def waypoint_manifest(namespace: str, name: str, traffic_type: str) -> dict[str, Any]:
    """The Gateway that makes a waypoint, as ``istioctl waypoint generate`` writes it."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"istio.io/waypoint-for": traffic_type},
        },
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def _yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)


@click.group(context_settings=CONTEXT)
def waypoint() -> None:
    """Manage waypoints: the L7 proxies of a namespace, service or workload."""


@waypoint.command(context_settings=CONTEXT)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--name", default="waypoint", show_default=True)
@click.option("--for", "traffic_type", type=_FOR, default="service", show_default=True)
def generate(namespace: str, name: str, traffic_type: str) -> None:
    """Print the Gateway YAML of a waypoint (apply it with `ambient apply -f -`)."""
    click.echo(_yaml(waypoint_manifest(namespace, name, traffic_type)), nl=False)


@waypoint.command("apply", context_settings=CONTEXT)
@target_options
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--name", default="waypoint", show_default=True)
@click.option("--for", "traffic_type", type=_FOR, default="service", show_default=True)
@click.option(
    "--enroll-namespace",
    is_flag=True,
    help="Also label the namespace istio.io/use-waypoint=NAME, so its services use it.",
)
@click.option(
    "--wait",
    type=float,
    default=None,
    metavar="SECONDS",
    help="A cluster: wait up to SECONDS until the waypoint is programmed; exit 1 if not.",
)
@click.pass_context
def apply_(
    ctx: click.Context,
    namespace: str,
    name: str,
    traffic_type: str,
    enroll_namespace: bool,
    wait: float | None,
    state_dir: str | None,
) -> None:
    """Create or update a waypoint in the running mesh."""
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        manifest = waypoint_manifest(namespace, name, traffic_type)
        cluster.waypoint_apply(cluster_target, manifest, enroll_namespace, wait)
        return
    text = _yaml(waypoint_manifest(namespace, name, traffic_type))
    call(ctx, "POST", "/apply", {"text": text, "filename": "<waypoint apply>"})
    click.echo(f"waypoint {namespace}/{name} applied")
    if enroll_namespace:
        call(
            ctx,
            "POST",
            "/label",
            {
                "kind": "namespace",
                "namespace": "",
                "name": namespace,
                "key": "istio.io/use-waypoint",
                "value": name,
            },
        )
        click.echo(f'namespace {namespace} labeled with "istio.io/use-waypoint={name}"')


_CLASS = "istio-waypoint"


def _waypoints(ctx: click.Context, namespace: str | None) -> list[dict[str, Any]]:
    """The waypoint Gateways (class ``istio-waypoint``) of ``namespace`` (None: all), in
    their API form, sorted by namespace and name as istioctl lists them."""
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        gateways = cluster.waypoint_gateways(cluster_target, namespace)
    else:
        from ambient.cli.get import folder_objects

        gateways = [
            g
            for g in folder_objects(ctx, "Gateway")
            if namespace is None or g["metadata"].get("namespace") == namespace
        ]
    found = [g for g in gateways if (g.get("spec") or {}).get("gatewayClassName") == _CLASS]
    return sorted(found, key=lambda g: (g["metadata"]["namespace"], g["metadata"]["name"]))


def _condition(gateway: dict[str, Any]) -> dict[str, Any]:
    for condition in (gateway.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Programmed":
            return dict(condition)
    return {}


@waypoint.command("list", context_settings=CONTEXT)
@target_options
@click.option(
    "-n", "--namespace", default=None, help="[default: default; a cluster: the context's]"
)
@click.option("-A", "--all-namespaces", is_flag=True, help="Waypoints of every namespace.")
@click.pass_context
def list_(
    ctx: click.Context, namespace: str | None, all_namespaces: bool, state_dir: str | None
) -> None:
    """List waypoints: NAME REVISION TRAFFIC TYPE PROGRAMMED, as istioctl waypoint list."""
    scope = None if all_namespaces else namespace or _default_namespace(ctx)
    gateways = _waypoints(ctx, scope)
    if not gateways:
        click.echo("No waypoints found.")
        return
    rows = []
    for g in gateways:
        meta = g["metadata"]
        labels = meta.get("labels") or {}
        row = [
            meta["name"],
            labels.get("istio.io/rev", "default"),
            labels.get("istio.io/waypoint-for", "none"),
            str(_condition(g).get("status", "False")),
        ]
        rows.append([meta["namespace"], *row] if all_namespaces else row)
    headers = ["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"]
    print_go_table(["NAMESPACE", *headers] if all_namespaces else headers, rows, 5)


@waypoint.command("status", context_settings=CONTEXT)
@target_options
@click.argument("name", required=False)
@click.option(
    "-n", "--namespace", default=None, help="[default: default; a cluster: the context's]"
)
@click.option("-A", "--all-namespaces", is_flag=True, help="Waypoints of every namespace.")
@click.pass_context
def status_(
    ctx: click.Context,
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    state_dir: str | None,
) -> None:
    """Show each waypoint's Programmed condition: NAME STATUS TYPE REASON MESSAGE, as
    istioctl waypoint status."""
    scope = None if all_namespaces else namespace or _default_namespace(ctx)
    gateways = [g for g in _waypoints(ctx, scope) if name is None or g["metadata"]["name"] == name]
    if name is not None and not gateways:
        raise click.ClickException(f"no waypoint named {name} in namespace {scope}")
    if not gateways:
        click.echo("No waypoints found.")
        return
    rows = []
    for g in gateways:
        condition = _condition(g)
        row = [
            g["metadata"]["name"],
            str(condition.get("status", "")),
            str(condition.get("type", "")),
            str(condition.get("reason", "")),
            str(condition.get("message", "")),
        ]
        rows.append([g["metadata"]["namespace"], *row] if scope is None else row)
    headers = ["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]
    print_go_table(["NAMESPACE", *headers] if scope is None else headers, rows, 5)


def _default_namespace(ctx: click.Context) -> str:
    cluster_target = target(ctx)
    if cluster_target is None:
        return "default"
    from ambient.cli import cluster

    return cluster.context_namespace(cluster_target)


@waypoint.command(context_settings=CONTEXT)
@target_options
@click.argument("names", nargs=-1)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--all", "delete_all", is_flag=True, help="Every waypoint of the namespace.")
@click.pass_context
def delete(
    ctx: click.Context,
    names: tuple[str, ...],
    namespace: str,
    delete_all: bool,
    state_dir: str | None,
) -> None:
    """Delete waypoints by name (default: `waypoint`), or all of a namespace."""
    if delete_all and names:
        raise click.UsageError("give waypoint names or --all, not both")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        wanted = None if delete_all else list(names or ("waypoint",))
        for deleted in cluster.waypoint_delete(cluster_target, namespace, wanted):
            click.echo(f"waypoint {namespace}/{deleted} deleted")
        return
    existing = {g["metadata"]["name"] for g in _waypoints(ctx, namespace)}
    wanted = sorted(existing) if delete_all else list(names or ("waypoint",))
    missing = [n for n in wanted if n not in existing]
    if missing:
        raise click.ClickException(
            f"no waypoint named {', '.join(missing)} in namespace {namespace}"
        )
    for name in wanted:
        text = _yaml(waypoint_manifest(namespace, name, "service"))
        call(ctx, "POST", "/delete", {"text": text, "filename": "<waypoint delete>"})
        click.echo(f"waypoint {namespace}/{name} deleted")


@waypoint.command(context_settings=CONTEXT)
@click.option(
    "--pod-ip",
    envvar="POD_IP",
    required=True,
    help="The waypoint pod's address ($POD_IP, from the pod's status).",
)
@click.option("--interval", type=float, default=2.0, show_default=True, hidden=True)
def hosted(pod_ip: str, interval: float) -> None:
    """The process of a waypoint pod in a cluster (what its Deployment runs).

    The node proxy of the pod's node serves the waypoint on the pod's address, as in
    the folder mode; this process stands for it in the pod: it reports when the
    waypoint answers POD_IP:15021/healthz/ready (and when it stops answering), and
    exits 0 on SIGTERM."""
    import signal
    import threading
    import urllib.request

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    url = f"http://{pod_ip}:15021/healthz/ready"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no $http_proxy
    ready: bool | None = None
    while not stop.is_set():
        try:
            with opener.open(url, timeout=interval) as answer:
                now = answer.status == 200
        except OSError:
            now = False
        if now != ready:
            click.echo(f"waypoint on {pod_ip}: {'ready' if now else 'not ready'} ({url})", err=True)
            ready = now
        stop.wait(interval)
