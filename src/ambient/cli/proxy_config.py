"""``ambient proxy-config`` (alias ``pc``): what a waypoint compiled, as istioctl's
``proxy-config`` shows an Envoy's.

Decisions (istioctl 1.32's tables where it has them; the data: ``waypoint.debugdump``):

- ``routes|clusters|listeners|endpoints|all [deploy/]NAME -n NS``: NAME is the
  waypoint (its Gateway, i.e. its Deployment); each node proxy hosting one of its
  pods answers ``/waypoint_config_dump`` on its admin port (the control API's node
  list in folder mode; the cluster's ztunnels with ``--kubeconfig``). With several
  replicas, each pod's rows are printed under a ``pod.namespace:`` line.
- Columns: routes ``NAME VHOST NAME DOMAINS MATCH VIRTUAL SERVICE`` (padding 5),
  clusters ``SERVICE FQDN PORT SUBSET DIRECTION TYPE DESTINATION RULE`` (5),
  endpoints ``ENDPOINT STATUS OUTLIER CHECK CLUSTER`` (5), listeners ``ADDRESSES PORT
  MATCH DESTINATION`` (1). istioctl's tables show no weights: the routes table adds
  a ``BACKENDS`` column (``cluster=weight``), which ``-o json`` has too, with each
  cluster's circuit breakers and outlier detection.
- Filters as istioctl's: ``--fqdn``, ``--port``, ``--subset`` (clusters, endpoints),
  ``--status`` (endpoints), ``--name`` (routes).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import click
import yaml

from ambient.cli.app import CONTEXT, call, fail, target, target_options
from ambient.cli.zctables import print_go_table

__all__ = ["proxy_config"]


def _get(host: str, port: int) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/waypoint_config_dump")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise OSError(f"{host}:{port}: {exc}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"{host}:{port}/waypoint_config_dump answered {response.status}")
    data: list[dict[str, Any]] = json.loads(body)
    return data


def _configs(ctx: click.Context, namespace: str, name: str) -> list[dict[str, Any]]:
    cluster_target = target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        admins = [(h, p) for _, h, p in cluster.ztunnel_admins(cluster_target, None)]
    else:
        admins = [
            (str(n["admin"]["admin"][0]), int(n["admin"]["admin"][1]))
            for n in call(ctx, "GET", "/nodes")
        ]
    found = []
    for host, port in admins:
        try:
            dumps = _get(host, port)
        except (OSError, ValueError) as exc:
            fail(f"cannot read the waypoints of the node proxy at {host}:{port}: {exc}")
        found += [d for d in dumps if d.get("waypoint") == f"{namespace}/{name}"]
    if not found:
        fail(f'no pod of waypoint "{name}" runs in namespace {namespace} (ambient zc waypoints)')
    return sorted(found, key=lambda d: d["pod"])


def _route_rows(config: dict[str, Any], name: str | None) -> list[list[str]]:
    rows = []
    for route in config["routes"]:
        if name and route["name"] != name:
            continue
        for rule in route["routes"]:
            backends = ",".join(
                f"{b['cluster'] or b.get('error', '-')}={b['weight']}" for b in rule["backends"]
            )
            rows.append(
                [
                    route["name"],
                    route["virtualHost"],
                    ",".join(route["domains"]),
                    rule["match"],
                    rule["virtualService"],
                    backends or "-",
                ]
            )
    return rows


def _cluster_ok(cluster: dict[str, Any], options: dict[str, Any]) -> bool:
    return (
        (not options["fqdn"] or options["fqdn"] in cluster["serviceFqdn"])
        and (options["port"] is None or cluster["port"] == options["port"])
        and (not options["subset"] or cluster["subset"] == options["subset"])
    )


def _print(config: dict[str, Any], what: str, options: dict[str, Any]) -> None:
    clusters = [c for c in config["clusters"] if _cluster_ok(c, options)]
    if what == "routes":
        headers = ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE", "BACKENDS"]
        print_go_table(headers, _route_rows(config, options["name"]), 5)
    elif what == "clusters":
        headers = ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
        rows = [
            [
                c["serviceFqdn"],
                str(c["port"]),
                c["subset"],
                c["direction"],
                c["type"],
                c["destinationRule"],
            ]
            for c in clusters
        ]
        print_go_table(headers, rows, 5)
    elif what == "endpoints":
        rows = [
            [e["address"], e["health"], e["outlierCheck"], c["name"]]
            for c in clusters
            for e in c["endpoints"]
            if not options["status"] or e["health"].lower() == options["status"].lower()
        ]
        print_go_table(["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], rows, 5)
    else:
        rows = [
            [x["address"].rpartition(":")[0], str(x["port"]), x["protocol"], x["destination"]]
            for x in config["listeners"]
        ]
        print_go_table(["ADDRESSES", "PORT", "MATCH", "DESTINATION"], rows, 1)


@click.command("proxy-config", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["routes", "route", "clusters", "cluster", "listeners", "listener", "endpoints", "endpoint", "all"]))  # fmt: skip
@click.argument("ref", metavar="[deploy/]NAME")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["short", "json", "yaml"]), default="short", show_default=True)  # fmt: skip
@click.option("--fqdn", default=None, help="clusters/endpoints: only this service (substring).")
@click.option("--port", type=int, default=None, help="clusters/endpoints: only this port.")
@click.option("--subset", default=None, help="clusters/endpoints: only this subset.")
@click.option("--status", default=None, help="endpoints: only this health (healthy, unhealthy).")
@click.option("--name", default=None, help="routes: only this route configuration.")
@target_options
@click.pass_context
def proxy_config(
    ctx: click.Context,
    what: str,
    ref: str,
    namespace: str,
    output: str,
    fqdn: str | None,
    port: int | None,
    subset: str | None,
    status: str | None,
    name: str | None,
    state_dir: str | None,
) -> None:
    """Show what a waypoint compiled: routes (matches, weights), clusters per subset,
    their endpoints with health and outlier state, listeners (as `istioctl pc`).

    Example: ambient pc routes deploy/waypoint -n shop"""
    kind, _, waypoint = ref.rpartition("/")
    if kind not in ("", "deploy", "deployment", "deployments", "gateway", "gtw"):
        fail(f"{ref}: give the waypoint as NAME or deploy/NAME")
    what = what if what.endswith("s") or what == "all" else what + "s"
    options = {"fqdn": fqdn, "port": port, "subset": subset, "status": status, "name": name}
    configs = _configs(ctx, namespace, waypoint)
    if output in ("json", "yaml"):
        data: Any = (
            configs if what == "all" else [{"pod": c["pod"], what: c[what]} for c in configs]
        )
        text = json.dumps(data, indent=2)
        click.echo(
            yaml.safe_dump(json.loads(text), sort_keys=False) if output == "yaml" else text,
            nl=output != "yaml",
        )
        return
    for config in configs:
        if len(configs) > 1:
            click.echo(f"{config['pod']}.{config['namespace']}:")
        for part in ("listeners", "routes", "clusters", "endpoints") if what == "all" else (what,):
            _print(config, part, options)
            if what == "all" or len(configs) > 1:
                click.echo()
