"""Commands of the distributed mode: ``controlplane``, ``node token create``, ``node join``, ``ztunnel``.

The control plane runs as its own service; each node joins once with a one-time token,
then runs its ztunnel, which follows the control plane over mutual TLS::

    ambient controlplane --config DIR --state-dir cp
    ambient node token create node-1 --state-dir cp
    ambient node join --control-plane 127.0.0.1:15013 --token T --node node-1 \\
        --ca-root cp/node-ca/root-cert.pem --state-dir n1
    ambient ztunnel --node node-1 --node-ip 127.1.0.1 --control-plane 127.0.0.1:15012 \\
        --state-dir n1
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import click

from ambient.cli.main import CONTEXT, _state, cli, fail, state_dir_option

_LOG_LEVEL = click.option(
    "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])
)
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d`` (or a combination such as ``1h30m``)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(f"{text!r}: expected a duration such as 30m, 1h or 2d")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


@cli.command(context_settings=CONTEXT)
@click.option(
    "--config",
    "config_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of Kubernetes/Istio YAML (read at start).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Instead of --config: be the controller of this cluster (also $KUBECONFIG, "
    "~/.kube/config or in-cluster, when --config is not given).",
)
@click.option("--context", "kube_context", default=None, help="Kubeconfig context.")
@click.option(
    "--listen",
    default="127.0.0.1:15012",
    show_default=True,
    help="Certificate service (mutual TLS with node certificates).",
)
@click.option(
    "--join-listen", default="127.0.0.1:15013", show_default=True, help="Node joins (TLS)."
)
@click.option(
    "--xds-listen",
    default=None,
    help="xDS (mutual TLS) [default: the --listen host, port 15010].",
)
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="Reload the config folder when a file in it changes (a bad edit is refused, logged).",
)
@click.option(
    "--api-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve configuration changes and the pod schedule on this Unix socket "
    "(what `ambient up` uses).",
)
@click.option(
    "--track-health",
    is_flag=True,
    help="Pods are endpoints only once reported ready on --api-socket (as `ambient up` does).",
)
@click.option(
    "--workload-cert-ttl",
    default=None,
    help="Lifetime of workload certificates, e.g. 1h or 30s [default: 24h].",
)
@click.option(
    "--netns-addresses",
    is_flag=True,
    help="Pod and Service addresses from the --netns ranges (10.244/16, 10.96/16), "
    "as `ambient up --netns` uses.",
)
@state_dir_option
@_LOG_LEVEL
@click.pass_context
def controlplane(
    ctx: click.Context,
    config_dir: Path | None,
    kubeconfig: Path | None,
    kube_context: str | None,
    listen: str,
    join_listen: str,
    xds_listen: str | None,
    watch: bool,
    api_socket: Path | None,
    track_health: bool,
    workload_cert_ttl: str | None,
    netns_addresses: bool,
    state_dir: str | None,
    log_level: str,
) -> None:
    """Run the control plane as a service (certificates, node joins, xDS) in the foreground.

    Its configuration is a folder (--config) or a Kubernetes cluster (--kubeconfig,
    --context, or $KUBECONFIG), whose objects it watches and whose status it writes."""
    from ambient.local.distributed import ControlPlaneOptions, run_controlplane

    if config_dir is None:
        if api_socket is not None or track_health or netns_addresses or not watch:
            raise click.UsageError(
                "--api-socket, --track-health, --netns-addresses and --no-watch go with --config"
            )
        from ambient.kube.api import ClusterTarget
        from ambient.local.clusterplane import ClusterPlaneOptions, run_cluster_controlplane

        sys.exit(
            run_cluster_controlplane(
                ClusterTarget(kubeconfig, kube_context),
                _state(ctx).root,
                listen=listen,
                join_listen=join_listen,
                xds_listen=xds_listen,
                log_level=log_level,
                options=ClusterPlaneOptions(
                    workload_cert_ttl=parse_duration(workload_cert_ttl)
                    if workload_cert_ttl
                    else None
                ),
            )
        )
    if kubeconfig is not None or kube_context is not None:
        raise click.UsageError("give --config DIR or --kubeconfig, not both")

    options = ControlPlaneOptions(
        watch=watch,
        api_socket=api_socket,
        track_health=track_health,
        workload_cert_ttl=parse_duration(workload_cert_ttl) if workload_cert_ttl else None,
        netns_addresses=netns_addresses,
    )

    sys.exit(
        run_controlplane(
            config_dir,
            _state(ctx).root,
            listen=listen,
            join_listen=join_listen,
            xds_listen=xds_listen,
            log_level=log_level,
            options=options,
        )
    )


@cli.group(context_settings=CONTEXT)
def node() -> None:
    """Add nodes to a distributed mesh: join tokens and joining."""


@node.group(context_settings=CONTEXT)
def token() -> None:
    """One-time join tokens (kept in the control plane's state folder)."""


@token.command("create", context_settings=CONTEXT)
@click.argument("node_name", metavar="NODE")
@click.option("--ttl", default="1h", show_default=True, help="How long the token is valid.")
@state_dir_option
@click.pass_context
def token_create(ctx: click.Context, node_name: str, ttl: str, state_dir: str | None) -> None:
    """Print a new token that lets NODE join once (the control plane may be running)."""
    from ambient.identity.certs import CertificateError
    from ambient.identity.node import TokenStoreError
    from ambient.local.distributed import create_token

    try:
        click.echo(create_token(_state(ctx).root, node_name, parse_duration(ttl)))
    except (ValueError, CertificateError, TokenStoreError, OSError) as exc:
        fail(str(exc))


@node.command("join", context_settings=CONTEXT)
@click.option(
    "--control-plane", "address", required=True, help="HOST:PORT of the join port (15013)."
)
@click.option("--token", "token_value", required=True, help="From `ambient node token create`.")
@click.option("--node", "node_name", required=True, help="This node's name.")
@click.option(
    "--ca-root",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The control plane's node CA root (its STATE/node-ca/root-cert.pem).",
)
@state_dir_option
@click.pass_context
def node_join(
    ctx: click.Context,
    address: str,
    token_value: str,
    node_name: str,
    ca_root: Path,
    state_dir: str | None,
) -> None:
    """Join the mesh as NODE: store its credentials in this node's state folder."""
    from ambient.identity.certs import CertificateError
    from ambient.local.distributed import DistributedError, join, setup_logging

    setup_logging("error")  # a refusal is reported once, below, not also as a log warning
    try:
        where = join(address, token_value, node_name, ca_root, _state(ctx).root)
    except (ValueError, CertificateError, DistributedError) as exc:
        fail(str(exc))
    click.echo(f"node {node_name} joined; credentials in {where}")


@cli.command("ztunnel", context_settings=CONTEXT)
@click.option("--node", "node_name", required=True, help="The node this ztunnel serves.")
@click.option(
    "--control-plane",
    "address",
    required=True,
    help="HOST:PORT of the certificate service (15012); xDS is the same host, port 15010.",
)
@click.option("--xds", "xds_address", default=None, help="HOST:PORT of xDS, if not the default.")
@click.option(
    "--node-ip",
    default="127.0.0.1",
    show_default=True,
    help="Address of the node endpoints (admin 15000, metrics 15020, readiness 15021).",
)
@click.option(
    "--node-agent-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="In-pod mode (`ambient up --netns`): serve the pods the node agent lists on this "
    "Unix socket, inside their network namespaces.",
)
@state_dir_option
@_LOG_LEVEL
@click.pass_context
def ztunnel_(
    ctx: click.Context,
    node_name: str,
    address: str,
    xds_address: str | None,
    node_ip: str,
    node_agent_socket: Path | None,
    state_dir: str | None,
    log_level: str,
) -> None:
    """Run NODE's ztunnel in the foreground, following the control plane."""
    from ambient.local.distributed import run_ztunnel, xds_address_for

    sys.exit(
        run_ztunnel(
            node_name,
            node_ip,
            _state(ctx).root,
            ca_address=address,
            xds_address=xds_address or xds_address_for(address),
            log_level=log_level,
            node_agent_socket=node_agent_socket,
        )
    )
