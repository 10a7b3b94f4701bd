"""The ``ambient`` command: istioctl + kubectl for a mesh that runs on plain hosts.

The root group and its shared options are in ``cli.app``; each command group is
its own module, attached here by name and imported when it runs (``cli.lazy``).
"""

from __future__ import annotations

from ambient.cli.app import cli

__all__ = ["cli", "main"]

# name -> "module:attribute", imported when the command runs (``cli.lazy``): the node
# proxy (``ambient ztunnel``) does not carry the other commands' modules.
COMMANDS = {
    "up": "ambient.cli.mesh:up",
    "down": "ambient.cli.mesh:down",
    "status": "ambient.cli.mesh:status",
    "exec": "ambient.cli.mesh:exec_",
    "apply": "ambient.cli.objects:apply",
    "delete": "ambient.cli.objects:delete",
    "label": "ambient.cli.objects:label",
    "get": "ambient.cli.get:get",
    "logs": "ambient.cli.logs:logs",
    "scale": "ambient.cli.workloads:scale",
    "wait": "ambient.cli.workloads:wait",
    "ztunnel-config": "ambient.cli.ztunnel_config:ztunnel_config",
    "zc": "ambient.cli.ztunnel_config:ztunnel_config",
    "waypoint": "ambient.cli.waypoint:waypoint",
    "analyze": "ambient.cli.analyze:analyze_command",
    "node": "ambient.cli.node:node",
    "controlplane": "ambient.cli.distributed:controlplane",
    "ztunnel": "ambient.cli.distributed:ztunnel_",
    "install": "ambient.cli.install:install_command",
    "uninstall": "ambient.cli.install:uninstall_command",
    "node-agent": "ambient.cli.nodeagent:node_agent",
    "cni-install": "ambient.cli.nodeagent:cni_install",
    "prometheus-config": "ambient.cli.observe:prometheus_config",
    "dashboard": "ambient.cli.dashboard:dashboard",
    "proxy-config": "ambient.cli.proxy_config:proxy_config",
    "pc": "ambient.cli.proxy_config:proxy_config",
}
for _name, _target in COMMANDS.items():
    cli.add_lazy(_name, _target)


def main() -> None:
    """Run the ``ambient`` command line."""
    cli(prog_name="ambient")
