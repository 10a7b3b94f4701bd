"""The ``ambient`` command: istioctl + kubectl for a mesh that runs on plain hosts.

The root group and its shared options are in ``cli.app``; each command group is
its own module, attached here.
"""

from __future__ import annotations

from ambient.cli import (
    analyze,
    dashboard,
    distributed,
    get,
    install,
    logs,
    mesh,
    node,
    nodeagent,
    objects,
    observe,
    proxy_config,
    waypoint,
    workloads,
    ztunnel_config,
)
from ambient.cli.app import cli

__all__ = ["cli", "main"]

for _command in (
    mesh.up,
    mesh.down,
    mesh.status,
    mesh.exec_,
    objects.apply,
    objects.delete,
    objects.label,
    get.get,
    logs.logs,
    workloads.scale,
    workloads.wait,
    ztunnel_config.ztunnel_config,
    waypoint.waypoint,
    analyze.analyze_command,
    node.node,
    distributed.controlplane,
    distributed.ztunnel_,
    install.install_command,
    install.uninstall_command,
    nodeagent.node_agent,
    nodeagent.cni_install,
    observe.prometheus_config,
    dashboard.dashboard,
):
    cli.add_command(_command)
cli.add_command(ztunnel_config.ztunnel_config, "zc")
cli.add_command(proxy_config.proxy_config)
cli.add_command(proxy_config.proxy_config, "pc")


def main() -> None:
    """Run the ``ambient`` command line."""
    cli(prog_name="ambient")
