"""The distributed mode's services: ``controlplane`` and ``ztunnel`` (nodes join with ``node``).

The control plane runs as its own service; each node joins once with a one-time token
(``cli.node``), then runs its ztunnel, which follows the control plane over mutual TLS::

    ambient controlplane --config DIR --state-dir cp
    ambient node token create node-1 --state-dir cp
    ambient node join --control-plane 127.0.0.1:15013 --token T --node node-1 \\
        --ca-root cp/node-ca/root-cert.pem --state-dir n1
    ambient ztunnel --node node-1 --node-ip 127.1.0.1 --control-plane 127.0.0.1:15012 \\
        --state-dir n1

In a Kubernetes cluster (``controlplane --kubeconfig``) there are no joins: a ztunnel
authenticates with its service-account token, bound to its pod::

    ambient ztunnel --node node-1 --control-plane 127.0.0.1:15012 --ca-root ROOT.pem \\
        --kubeconfig K --pod-name ztunnel-node-1      # or --in-cluster, or --token-file F
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ambient.cli.app import (
    CONTEXT,
    cluster_options,
    log_level_option,
    parse_duration,
    path_option,
    state,
    state_dir_option,
)

__all__ = ["controlplane", "ztunnel_"]


@click.command(context_settings=CONTEXT)
@click.option(
    "--config",
    "config_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of Kubernetes/Istio YAML (read at start).",
)
@cluster_options(
    "Instead of --config: be the controller of this cluster (also $KUBECONFIG, "
    "~/.kube/config or in-cluster, when --config is not given)."
)
@click.option(
    "--listen",
    default="127.0.0.1:15012",
    show_default=True,
    help="Certificate service (mutual TLS with node certificates; with --kubeconfig, TLS "
    "with ztunnels' service-account tokens).",
)
@click.option(
    "--join-listen",
    default=None,
    help="Node joins (TLS) [default: 127.0.0.1:15013]; --config only (in a cluster ztunnels "
    "authenticate with service-account tokens).",
)
@click.option(
    "--xds-listen",
    default=None,
    help="xDS (mutual TLS) [default: the --listen host, port 15010].",
)
@click.option(
    "--monitoring-listen",
    default=None,
    help="Metrics (/metrics) and Prometheus discovery (/prometheus/sd), plain HTTP "
    "[default: the --listen host, port 15014].",
)
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="Reload the config folder when a file in it changes (a bad edit is refused, logged).",
)
@path_option(
    "--api-socket",
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
    "--waypoint-image",
    default=None,
    help="With --kubeconfig: the image of the waypoint Deployments it makes [default: ambient] "
    "(ambient install --profile ambient sets its own).",
)
@click.option(
    "--netns-addresses",
    is_flag=True,
    help="Pod and Service addresses from the --netns ranges (10.244/16, 10.96/16), "
    "as `ambient up --netns` uses.",
)
@state_dir_option
@log_level_option
@click.pass_context
def controlplane(
    ctx: click.Context,
    config_dir: Path | None,
    kubeconfig: Path | None,
    kube_context: str | None,
    listen: str,
    join_listen: str | None,
    xds_listen: str | None,
    monitoring_listen: str | None,
    watch: bool,
    api_socket: Path | None,
    track_health: bool,
    workload_cert_ttl: str | None,
    netns_addresses: bool,
    waypoint_image: str | None,
    state_dir: str | None,
    log_level: str,
) -> None:
    """Run the control plane as a service (certificates, node joins, xDS) in the foreground.

    Its configuration is a folder (--config) or a Kubernetes cluster (--kubeconfig,
    --context, or $KUBECONFIG), whose objects it watches and whose status it writes."""
    from ambient.local.distributed import ControlPlaneOptions, run_controlplane

    root = ctx.find_root().meta
    if kubeconfig is None and root.get("kubeconfig"):  # ambient --kubeconfig K controlplane
        kubeconfig = Path(root["kubeconfig"])
    kube_context = kube_context or root.get("kube_context")
    if config_dir is None:
        if api_socket is not None or track_health or netns_addresses or not watch:
            raise click.UsageError(
                "--api-socket, --track-health, --netns-addresses and --no-watch go with --config"
            )
        if join_listen is not None:
            raise click.UsageError(
                "--join-listen goes with --config: in a cluster ztunnels authenticate with "
                "their service-account tokens, not join tokens"
            )
        from ambient.kube.api import ClusterTarget
        from ambient.local.clusterplane import ClusterPlaneOptions, run_cluster_controlplane

        sys.exit(
            run_cluster_controlplane(
                ClusterTarget(kubeconfig, kube_context),
                state(ctx).root,
                listen=listen,
                xds_listen=xds_listen,
                log_level=log_level,
                options=ClusterPlaneOptions(
                    workload_cert_ttl=parse_duration(workload_cert_ttl)
                    if workload_cert_ttl
                    else None,
                    waypoint_image=waypoint_image or "ambient",
                    monitoring_listen=monitoring_listen,
                ),
            )
        )
    if kubeconfig is not None or kube_context is not None:
        raise click.UsageError("give --config DIR or --kubeconfig, not both")
    if waypoint_image is not None:
        raise click.UsageError("--waypoint-image goes with a cluster (--kubeconfig)")

    options = ControlPlaneOptions(
        watch=watch,
        api_socket=api_socket,
        track_health=track_health,
        workload_cert_ttl=parse_duration(workload_cert_ttl) if workload_cert_ttl else None,
        netns_addresses=netns_addresses,
        monitoring_listen=monitoring_listen,
    )

    sys.exit(
        run_controlplane(
            config_dir,
            state(ctx).root,
            listen=listen,
            join_listen=join_listen or "127.0.0.1:15013",
            xds_listen=xds_listen,
            log_level=log_level,
            options=options,
        )
    )


@click.command("ztunnel", context_settings=CONTEXT)
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
@path_option(
    "--node-agent-socket",
    help="In-pod mode (`ambient up --netns`): serve the pods the node agent lists on this "
    "Unix socket, inside their network namespaces.",
)
@cluster_options(
    "In a cluster: request this ztunnel's token (TokenRequest, bound to its pod, "
    "audience istio-ca) with this kubeconfig's credentials.",
    exists=True,
)
@click.option(
    "--in-cluster",
    is_flag=True,
    help="In a cluster: request the token with the pod's own service account.",
)
@path_option(
    "--token-file",
    help="In a cluster: a projected token file to send as is, re-read on every call "
    "(Istio mounts it at /var/run/secrets/tokens/istio-token).",
)
@path_option(
    "--ca-root",
    exists=True,
    help="In a cluster: the control plane's server CA (node_ca_root in its controlplane.json).",
)
@click.option("--pod-name", envvar="POD_NAME", default="", help="This ztunnel's pod [$POD_NAME].")
@click.option(
    "--pod-namespace",
    envvar="POD_NAMESPACE",
    default="istio-system",
    show_default=True,
    help="Its namespace [$POD_NAMESPACE].",
)
@click.option("--pod-uid", envvar="POD_UID", default=None, help="Its uid, if known [$POD_UID].")
@click.option(
    "--service-account",
    envvar="SERVICE_ACCOUNT",
    default="ztunnel",
    show_default=True,
    help="Its ServiceAccount [$SERVICE_ACCOUNT].",
)
@state_dir_option
@log_level_option
@click.pass_context
def ztunnel_(
    ctx: click.Context,
    /,
    node_name: str,
    address: str,
    xds_address: str | None,
    node_ip: str,
    node_agent_socket: Path | None,
    state_dir: str | None,
    log_level: str,
    **cluster: Any,
) -> None:
    """Run NODE's ztunnel in the foreground, following the control plane.

    It authenticates with the node credentials of `ambient node join`, or, in a
    Kubernetes cluster (--kubeconfig/--context, --in-cluster or --token-file, with
    --ca-root), with its service-account token bound to its pod."""
    from ambient.local.nodeproxy import run_ztunnel, xds_address_for

    identity = _cluster_identity(**cluster)  # --kubeconfig ... --service-account
    sys.exit(
        run_ztunnel(
            node_name,
            node_ip,
            state(ctx).root if identity is None else Path("."),
            ca_address=address,
            xds_address=xds_address or xds_address_for(address),
            log_level=log_level,
            node_agent_socket=node_agent_socket,
            token_auth=identity.session if identity is not None else None,
        )
    )


def _cluster_identity(
    *,
    kubeconfig: Path | None,
    kube_context: str | None,
    in_cluster: bool,
    token_file: Path | None,
    ca_root: Path | None,
    pod_name: str,
    pod_namespace: str,
    pod_uid: str | None,
    service_account: str,
) -> Any:
    """The ztunnel's ``ClusterIdentity`` if a cluster option was given, else None (the
    parameters are the cluster options' names, as click passes them)."""
    from ambient.kube.api import ClusterTarget
    from ambient.local.nodeclients import ClusterIdentity

    kube = kubeconfig is not None or kube_context is not None
    chosen = sum((kube, in_cluster, token_file is not None))
    if chosen == 0:
        if ca_root is not None:
            raise click.UsageError("--ca-root goes with --kubeconfig, --in-cluster or --token-file")
        return None
    if chosen > 1:
        raise click.UsageError("give one of --kubeconfig/--context, --in-cluster, --token-file")
    if ca_root is None:
        raise click.UsageError(
            "--ca-root is needed in a cluster: the control plane's server CA "
            "(node_ca_root in its controlplane.json)"
        )
    if token_file is None and not pod_name:
        raise click.UsageError(
            "--pod-name (or $POD_NAME) is needed to bind the token to this ztunnel's pod"
        )
    try:
        roots = ca_root.read_bytes()
    except OSError as err:
        raise click.UsageError(f"cannot read --ca-root {ca_root}: {err.strerror}") from None
    return ClusterIdentity(
        roots,
        pod_name,
        pod_uid,
        pod_namespace,
        service_account,
        ClusterTarget(kubeconfig, kube_context, in_cluster),
        token_file,
    )
