"""``ambient node-agent`` and ``ambient cni-install``: a real cluster's node agent and CNI plugin.

Defines the commands only; ``cli.main`` attaches them to the root group.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ambient.cli.app import CONTEXT, cluster_options, fail, log_level_option
from ambient.cni import install
from ambient.cni.plugin import DEFAULT_RUN_DIR

if TYPE_CHECKING:
    from ambient.nodeagent.service import NodeAgentOptions

log = logging.getLogger("ambient.nodeagent")

__all__ = ["cni_install", "node_agent"]


def _cni_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--exclude-namespace",
        "exclude",
        multiple=True,
        default=("kube-system",),
        show_default=True,
        help="Pods of this namespace never wait for the node agent (repeat for several).",
    )(f)
    f = click.option(
        "--plugin-python",
        default=install.DEFAULT_PYTHON,
        show_default=True,
        help="The node's python3, which runs the plugin.",
    )(f)
    f = click.option(
        "--host-run-dir",
        default=None,
        help="The agent's run folder as the node's runtime sees it [default: --cni-run-dir].",
    )(f)
    f = click.option(
        "--cni-conf-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/etc/cni/net.d"),
        show_default=True,
        help="The node's CNI configuration folder.",
    )(f)
    f = click.option(
        "--cni-bin-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("/opt/cni/bin"),
        show_default=True,
        help="The node's CNI plugin folder.",
    )(f)
    f = click.option(
        "--cni-run-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(DEFAULT_RUN_DIR),
        show_default=True,
        help="The agent's folder: pluginevent.sock and cni-pods.json.",
    )(f)
    return f


@click.command("cni-install", context_settings=CONTEXT)
@_cni_options
@click.option("--uninstall", is_flag=True, help="Remove the plugin's entry and executable.")
def cni_install(
    cni_run_dir: Path,
    cni_bin_dir: Path,
    cni_conf_dir: Path,
    host_run_dir: str | None,
    plugin_python: str,
    exclude: tuple[str, ...],
    uninstall: bool,
) -> None:
    """Install the ambient-cni plugin on this node, chained into its network configuration.

    Copies the plugin to --cni-bin-dir and appends its entry to the primary network
    configuration of --cni-conf-dir (istio-cni's install-cni). `ambient node-agent
    --install-cni` does the same once it serves, and keeps the entry there."""
    if uninstall:
        changed = install.unchain(cni_conf_dir, cni_bin_dir)
        click.echo(f"ambient-cni removed from {', '.join(map(str, changed)) or 'no configuration'}")
        return
    entry = install.plugin_entry(host_run_dir or str(cni_run_dir), exclude)
    try:
        binary = install.install_binary(cni_bin_dir, plugin_python)
        config = install.chain(cni_conf_dir, entry)
    except (install.InstallError, OSError) as err:
        fail(str(err))
    click.echo(f"installed {binary}; chained into {config}")


@click.command("node-agent", context_settings=CONTEXT)
@click.option("--node", envvar="NODE_NAME", required=True, help="This node's name [$NODE_NAME].")
@cluster_options("The cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster).")
@click.option(
    "--ztunnel-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/var/run/ztunnel/nodeagent.sock"),
    show_default=True,
    help="Serve this node's ztunnel (its --node-agent-socket) here.",
)
@click.option(
    "--netns-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/run/netns"),
    show_default=True,
    help="The runtime's network namespace folder, as this process sees it.",
)
@click.option(
    "--install-cni",
    is_flag=True,
    help="Once serving, install the plugin into --cni-bin-dir/--cni-conf-dir and keep it chained.",
)
@click.option(
    "--owner-daemonset",
    default=None,
    metavar="NAMESPACE/NAME",
    help="The DaemonSet running this agent: the plugin is removed on exit only if it is gone.",
)
@_cni_options
@log_level_option
def node_agent(
    node: str,
    kubeconfig: Path | None,
    kube_context: str | None,
    ztunnel_socket: Path,
    netns_dir: Path,
    install_cni: bool,
    owner_daemonset: str | None,
    cni_run_dir: Path,
    cni_bin_dir: Path,
    cni_conf_dir: Path,
    host_run_dir: str | None,
    plugin_python: str,
    exclude: tuple[str, ...],
    log_level: str,
) -> None:
    """Run this node's agent (istio-cni's): CNI plugin events, its ztunnel's pods, redirection.

    Serves the ambient-cni plugin on CNI-RUN-DIR/pluginevent.sock (which pods are
    enrolled is asked of the API server; enrolled pods get their redirection before
    they start) and this node's ztunnel on --ztunnel-socket. Root, on the host network."""
    from ambient.kube.api import ClusterTarget
    from ambient.nodeagent.service import CniInstallOptions, NodeAgentOptions

    if owner_daemonset is not None and "/" not in owner_daemonset:
        raise click.UsageError("--owner-daemonset: NAMESPACE/NAME")
    cni = (
        CniInstallOptions(
            bin_dir=cni_bin_dir,
            conf_dir=cni_conf_dir,
            python=plugin_python,
            exclude_namespaces=exclude,
            host_run_dir=host_run_dir or str(cni_run_dir),
        )
        if install_cni
        else None
    )
    options = NodeAgentOptions(
        node=node,
        target=ClusterTarget(kubeconfig, kube_context),
        run_dir=cni_run_dir,
        ztunnel_socket=ztunnel_socket,
        netns_dir=netns_dir,
        install=cni,
        owner_daemonset=owner_daemonset,
    )
    sys.exit(run_node_agent(options, log_level))


def run_node_agent(options: NodeAgentOptions, log_level: str = "info") -> int:
    """Run until SIGINT/SIGTERM; the exit status."""
    from ambient.kube.api import KubeClient, KubeError, load_config
    from ambient.local.nodeproxy import run_until_signal
    from ambient.logconfig import setup_logging
    from ambient.nodeagent.service import NodeAgentService

    setup_logging(log_level)

    async def body(stop: asyncio.Event) -> int:
        try:
            client = KubeClient(load_config(options.target), field_manager="ambient-node-agent")
        except KubeError as err:
            log.error("%s", err)
            return 1
        service = NodeAgentService(options, client)
        try:
            await service.start()
        except OSError as err:
            log.error("node agent for %s cannot start: %s", options.node, err)
            await service.close()
            await client.close()
            return 1
        log.info("node agent for %s ready", options.node)
        await stop.wait()
        await service.close()
        await client.close()
        return 0

    return run_until_signal(body)
