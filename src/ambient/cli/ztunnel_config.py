"""``ambient ztunnel-config`` (alias ``zc``): a ztunnel's view of the mesh, as istioctl's.

Decisions (istioctl 1.32's ``ztunnel-config`` unless said; tables: ``cli.zctables``):

- ``workloads|services|policies|certificates|connections|waypoints|all|log`` with
  istioctl's aliases (``w``, ``svc``/``s``, ``pol``/``p``, ``certs``/``cert``, ``cons``).
- ``-o short`` (the default; ``table`` accepted), ``json`` (the dump's items, indented
  by four) or ``yaml``.
- Which ztunnel answers: istioctl's argument ``[<type>/]<name>[.<namespace>]`` (a
  ztunnel pod: ``ztunnel-node-1`` here, in ``ambient-system``, ``.istio-system``
  accepted; ``ds/ztunnel`` is the default choice; another pod is refused as istioctl
  refuses it: ``... only supported by Ztunnel proxies``), or ``--node NODE``, the
  ztunnel of that node, as istioctl's ``--node``. Without either, workloads, services
  and policies come from the first ztunnel (every ztunnel holds the same view) and
  the per-node parts (certificates, connections, waypoints, log) from every node's.
  ``--workload-node`` filters the workloads by node.
- ``log [--level SPEC] [-r]``: each ztunnel's ``POST /logging`` (``ztunnel.admin``),
  printed ``<ztunnel pod>.<namespace>:`` then its answer, as istioctl does; ``-r``
  resets to the level it started with (istioctl says "info"; ours is ``up
  --log-level``). A cluster's ztunnel changes levels only for a client on its own
  loopback (its admin refuses others).
"""

from __future__ import annotations

import json
from typing import Any

import click
import yaml

from ambient.cli import zctables
from ambient.cli.app import CONTEXT, call, fail, target, target_options

__all__ = ["ztunnel_config"]

_PARTS = {
    "workloads": "workloads",
    "workload": "workloads",
    "w": "workloads",
    "services": "services",
    "service": "services",
    "svc": "services",
    "s": "services",
    "policies": "policies",
    "policy": "policies",
    "pol": "policies",
    "p": "policies",
    "certificates": "certificates",
    "certificate": "certificates",
    "certs": "certificates",
    "cert": "certificates",
    "connections": "connections",
    "cons": "connections",
    "waypoints": "waypoints",
    "waypoint": "waypoints",
    "all": "all",
    "log": "log",
}
_PER_NODE = ("certificates", "connections", "waypoints")


def _dumps(ctx: click.Context, node: str | None) -> list[dict[str, Any]]:
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        dumps = cluster.config_dumps(cluster_target, node)
    else:
        dumps = call(ctx, "GET", "/config_dump" + (f"?node={node}" if node else ""))
    if not dumps:
        fail("no ztunnel is running")
    return list(dumps)


def _merged(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    """The first ztunnel's view, with every node's certificates, connections, waypoints."""
    states: dict[str, Any] = {}
    for d in dumps:
        states.update(d.get("workloadState") or {})
    return {
        **dumps[0],
        "certificates": [c for d in dumps for c in d["certificates"]],
        "workloadState": states,
        "waypoints": [{"node": d["node"], **w} for d in dumps for w in d.get("waypoints", [])],
    }


def _items(part: str, dump: dict[str, Any], namespace: str | None, node: str | None) -> Any:
    if part == "connections":
        states = dump.get("workloadState") or {}
        return {
            uid: s
            for uid, s in states.items()
            if not namespace or s["info"]["namespace"] == namespace
        }
    items: list[dict[str, Any]] = dump[part]
    if namespace and part in ("workloads", "services", "policies", "waypoints"):
        items = [i for i in items if i["namespace"] == namespace]
    if node and part == "workloads":
        items = [i for i in items if i.get("node") == node]
    return items


def _print_data(data: Any, output: str) -> None:
    text = json.dumps(data, indent=4)
    if output == "yaml":
        click.echo(yaml.safe_dump(json.loads(text), sort_keys=True), nl=False)
    else:
        click.echo(text)


def _table(part: str, dump: dict[str, Any], options: dict[str, Any]) -> None:
    items = _items(part, dump, options["namespace"], options["workload_node"])
    padding = 1
    if part == "workloads":
        rows = zctables.workload_rows(dump, items)
    elif part == "services":
        rows = zctables.service_rows(dump, items)
    elif part == "policies":
        rows = zctables.policy_rows(items)
    elif part == "certificates":
        rows, padding = zctables.certificate_rows(items), 5
    elif part == "connections":
        rows = zctables.connection_rows(
            dump, options["namespace"], options["direction"], options["raw"]
        )
    else:
        rows = zctables.waypoint_rows(items)
    zctables.print_go_table(zctables.HEADERS[part], rows, padding)


def _log_levels(ctx: click.Context, node: str | None, level: str | None, reset: bool) -> None:
    if level is not None and reset:
        raise click.UsageError("--level cannot be combined with --reset")
    from ambient.cli.ztunnel_admin import post_logging

    query = {}
    if level:
        query["level"] = {"warning": "warn", "critical": "error"}.get(level, level)
    if reset:
        query["reset"] = ""
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        endpoints = cluster.ztunnel_admins(cluster_target, node)
    else:
        nodes = call(ctx, "GET", "/nodes")
        if node is not None:
            nodes = [n for n in nodes if n["name"] == node]
            if not nodes:
                fail(f"no node named {node!r}")
        endpoints = [
            (
                f"ztunnel-{n['name']}.ambient-system",
                str(n["admin"]["admin"][0]),
                int(n["admin"]["admin"][1]),
            )
            for n in nodes
        ]
    failed = False
    for name, host, port in endpoints:
        try:
            status, text = post_logging(host, port, query)
        except OSError as exc:
            click.secho(f"error: {name}: {exc}", fg="red", err=True)
            failed = True
            continue
        if status >= 400:
            click.secho(f"error: {name}: {text.strip()}", fg="red", err=True)
            failed = True
            continue
        click.echo(f"{name}:\n{text}")
    if failed:
        raise SystemExit(1)


def _pod_node(ctx: click.Context, ref: str | None, node: str | None) -> str | None:
    """The node of the ztunnel pod ``ref`` (``[<type>/]<name>[.<namespace>]``), or ``node``."""
    if ref is None:
        return node
    kind, _, rest = ref.rpartition("/")
    name, _, namespace = rest.partition(".")
    if kind.lower() in ("ds", "daemonset", "daemonsets") and name == "ztunnel":
        return node  # the DaemonSet's pods: the default choice
    if kind and kind.lower() not in ("pod", "pods", "po"):
        fail(f"{ref}: give a ztunnel pod ([pod/]NAME[.NAMESPACE]) or ds/ztunnel")
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        found = cluster.ztunnel_pod_node(cluster_target, name, namespace or None)
    else:
        if namespace not in ("", "ambient-system", "istio-system") or not name.startswith(
            "ztunnel-"
        ):
            fail(f"this command is only supported by Ztunnel proxies: {name}")
        found = name.removeprefix("ztunnel-")
        if found not in [n["name"] for n in call(ctx, "GET", "/nodes")]:
            click.echo(f'Error from server (NotFound): pods "{name}" not found', err=True)
            raise SystemExit(1)
    if node is not None and node != found:
        fail(f"{ref} runs on node {found}, not on --node {node}: give one of them")
    return found


@click.command("ztunnel-config", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(sorted(_PARTS)), metavar="WHAT")
@click.argument("ztunnel", required=False, metavar="[ZTUNNEL-POD[.NAMESPACE]]")
@click.option(
    "--workload-namespace",
    "--service-namespace",
    "--policy-namespace",
    "-n",
    "namespace",
    default=None,
    help="Only workloads/services/policies/connections of this namespace.",
)
@click.option(
    "--node", default=None, help="The ztunnel of this node (default: every node's, or the first)."
)
@click.option("--workload-node", default=None, help="Only workloads on this node.")
@click.option("--direction", type=click.Choice(["inbound", "outbound"]), default=None,
              help="connections: only this direction.")  # fmt: skip
@click.option("--raw", is_flag=True, help="connections: addresses, not names.")
@click.option("--level", default=None, help="log: e.g. info, or info,access=debug.")
@click.option("-r", "--reset", is_flag=True, help="log: back to the start level.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["short", "table", "json", "yaml"]),
    default="short",
    show_default=True,
)
@target_options
@click.pass_context
def ztunnel_config(
    ctx: click.Context,
    what: str,
    ztunnel: str | None,
    namespace: str | None,
    node: str | None,
    workload_node: str | None,
    direction: str | None,
    raw: bool,
    level: str | None,
    reset: bool,
    output: str,
    state_dir: str | None,
) -> None:
    """Show a ztunnel's view of the mesh, or change its log levels (as `istioctl zc`).

    WHAT: workloads, services, policies, certificates, connections, waypoints, all, log.
    `waypoints` lists the waypoints node proxies run and the L7 objects they hold.

    ZTUNNEL-POD: the ztunnel pod to ask (ztunnel-NODE; default: see --node).

    Examples: ambient zc certificates; ambient zc connections -n shop;
    ambient zc log --level info,access=debug; ambient zc log ztunnel-node-1 -r"""
    part = _PARTS[what]
    node = _pod_node(ctx, ztunnel, node)
    if part == "log":
        _log_levels(ctx, node, level, reset)
        return
    dump = _merged(_dumps(ctx, node))
    options = {
        "namespace": namespace,
        "workload_node": workload_node,
        "direction": direction,
        "raw": raw,
    }
    if part == "all":
        if output in ("json", "yaml"):
            _print_data(dump, output)
            return
        for section in ("workloads", "services", "policies", "certificates", "waypoints"):
            _table(section, dump, options)
            click.echo()
        return
    if output in ("json", "yaml"):
        _print_data(_items(part, dump, namespace, workload_node), output)
        return
    _table(part, dump, options)
