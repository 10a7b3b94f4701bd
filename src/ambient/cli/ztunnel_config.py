"""``ambient ztunnel-config`` (alias ``zc``): a ztunnel's view of the mesh, as istioctl's."""

from __future__ import annotations

from typing import Any

import click

from ambient.cli.app import CONTEXT, call, fail, target, target_options
from ambient.cli.output import print_json, print_table

__all__ = ["ztunnel_config"]


@click.command("ztunnel-config", context_settings=CONTEXT)
@click.argument(
    "what",
    type=click.Choice(
        [
            "workloads",
            "workload",
            "services",
            "service",
            "policies",
            "policy",
            "certificates",
            "certificate",
            "waypoints",
            "waypoint",
            "all",
        ]
    ),
)
@click.option(
    "--workload-namespace",
    "-n",
    "namespace",
    default=None,
    help="Only workloads/services of this namespace.",
)
@click.option("--node", default=None, help="Which node's ztunnel to ask (default: the first).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@target_options
@click.pass_context
def ztunnel_config(
    ctx: click.Context,
    what: str,
    namespace: str | None,
    node: str | None,
    output: str,
    state_dir: str | None,
) -> None:
    """Show a ztunnel's view of the mesh (as `istioctl ztunnel-config`).

    `waypoints` (every node) lists the waypoints node proxies run and the L7 objects
    they hold (`-o json` names each one)."""
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        dumps = cluster.config_dumps(cluster_target, node)
    else:
        dumps = call(ctx, "GET", "/config_dump" + (f"?node={node}" if node else ""))
    if not dumps:
        fail("no ztunnel is running")
    dump = dumps[0]
    # Certificates and waypoints are per node: gather every node's.
    dump = {
        **dump,
        "certificates": [c for d in dumps for c in d["certificates"]],
        "waypoints": [{"node": d["node"], **w} for d in dumps for w in d.get("waypoints", [])],
    }
    if what == "all":
        if output == "json":
            print_json(dump)
            return
        for part in ("workloads", "services", "policies", "certificates", "waypoints"):
            _zc_table(part, dump, namespace)
            click.echo()
        return
    part = {
        "workload": "workloads",
        "service": "services",
        "policy": "policies",
        "certificate": "certificates",
        "waypoint": "waypoints",
    }.get(what, what)
    if output == "json":
        print_json(_zc_filter(part, dump, namespace))
        return
    _zc_table(part, dump, namespace)


def _zc_filter(part: str, dump: dict[str, Any], namespace: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = dump[part]
    if namespace and part in ("workloads", "services", "policies", "waypoints"):
        items = [i for i in items if i["namespace"] == namespace]
    return items


def _zc_table(part: str, dump: dict[str, Any], namespace: str | None) -> None:
    items = _zc_filter(part, dump, namespace)
    if part == "workloads":
        rows = [
            [
                w["namespace"],
                w["name"],
                ",".join(w["workloadIps"]),
                w["node"],
                _waypoint_name(w["waypoint"]),
                w["protocol"],
            ]
            for w in items
        ]
        print_table(["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"], rows)
    elif part == "services":
        healthy = {w["uid"] for w in dump["workloads"] if w["status"] == "Healthy"}
        rows = [
            [
                s["namespace"],
                s["name"],
                ",".join(s["vips"]),
                _waypoint_name(s["waypoint"]),
                f"{len([e for e in s['endpoints'] if e in healthy])}/{len(s['endpoints'])}",
            ]
            for s in items
        ]
        print_table(["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"], rows)
    elif part == "policies":
        rows = [
            [
                p["namespace"],
                p["name"],
                p["action"] + (" (dry-run)" if p["dryRun"] else ""),
                _scope(p),
            ]
            for p in items
        ]
        print_table(["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"], rows)
    elif part == "waypoints":
        rows = [
            [
                w["namespace"],
                w["name"],
                w["node"],
                w["address"],
                "true" if w["ready"] else "false",
                str(len(w.get("l7", {}).get("resources", []))),
                str(w.get("l7", {}).get("version", "")),
            ]
            for w in items
        ]
        print_table(
            ["NAMESPACE", "WAYPOINT POD", "NODE", "ADDRESS", "READY", "L7 OBJECTS", "VERSION"],
            rows,
        )
    else:
        rows = [
            [
                c["identity"],
                "Leaf",
                c["state"],
                "true" if c["state"] == "Available" else "false",
                c["not_after"],
                c["not_before"],
            ]
            for c in items
        ]
        print_table(
            ["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "NOT AFTER", "NOT BEFORE"], rows
        )


def _waypoint_name(destination: str | None) -> str:
    """``shop/waypoint.shop.svc.cluster.local`` -> ``waypoint`` (as istioctl shows it)."""
    if not destination:
        return "None"
    return destination.split("/", 1)[-1].split(".", 1)[0]


def _scope(policy: dict[str, Any]) -> str:
    if policy["scope"] == "GLOBAL":
        return "Global"
    if policy["scope"] == "NAMESPACE":
        return f"Namespace {policy['namespace']}"
    selector = ",".join(f"{k}={v}" for k, v in sorted((policy["selector"] or {}).items()))
    return f"WorkloadSelector {selector}"
