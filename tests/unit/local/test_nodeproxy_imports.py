"""What the node proxy (``ambient ztunnel``, one per node) imports: none of the control
plane's modules, nor the other commands' (every module stays resident in each node's
process; issue 18's RSS goal). Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.pki import make_ca

# As ``python -m ambient ztunnel`` gets there: the command line's root, the ztunnel
# command's module, then start_ztunnel as a cluster's ztunnel (token auth: nothing to
# load first), past every import it makes, until it gives up waiting for a control plane
# that is not there (loopback port 1). Then what its first waypoint would add is not in.
NODE_PROXY = """
import asyncio, json, sys
from pathlib import Path
import click
from ambient.cli.main import cli
cli.get_command(click.Context(cli), "ztunnel")
from ambient.identity.tokensource import FileTokenSource
from ambient.local.nodeclients import TokenAuth
from ambient.local.nodeproxy import start_ztunnel
auth = TokenAuth(FileTokenSource(Path(sys.argv[1]) / "token"), Path(sys.argv[2]).read_bytes())
try:
    asyncio.run(start_ztunnel(
        "node-1", "127.0.0.1", Path(sys.argv[1]),
        ca_address="127.0.0.1:1", xds_address="127.0.0.1:1", sync_timeout=0.2,
        token_auth=auth, ports=(0, 0, 0),
    ))
except TimeoutError:
    pass
else:
    raise SystemExit("start_ztunnel started without a control plane")
print(json.dumps(sorted(sys.modules)))
"""

# The control plane, the CA and its service, the config loader, YAML and the kinds (a
# waypoint resource pushed later brings them, not the start), the monitoring server,
# the Kubernetes client, the other commands.
FORBIDDEN = (
    "ambient.controlplane",
    "ambient.identity.ca",
    "ambient.identity.jointokens",
    "ambient.identity.members",
    "ambient.xds.ca_service",
    "ambient.xds.server",
    "ambient.xds.published",
    "ambient.config.loader",
    "ambient.config.kinds",
    "ambient.config.meshconfig",
    "yaml",
    "ambient.monitoring.server",
    "ambient.monitoring.metrics",
    "ambient.local.distributed",
    "ambient.local.revocation",
    "ambient.kube",
    "ambient.install",
    "ambient.dashboard",
    "ambient.analysis",
    "ambient.cli.mesh",
    "ambient.cli.objects",
    "ambient.cli.install",
    "ambient.waypoint.config",
    "ambient.waypoint.proxy",
    "lightkube",
    "httpx2",
    "joserfc",
    "h2",  # HBONE runs on ambient.http2 (h2 is the tests' reference peer only)
)


def _modules(script: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return modules


def _forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def test_the_node_proxy_imports_no_control_plane_module(tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(make_ca(tmp_path / "ca").roots_pem())
    modules = _modules(NODE_PROXY, str(tmp_path), str(roots))
    assert (
        "ambient.ztunnel.proxy" in modules and "ambient.xds.client" in modules
    )  # it did get there
    assert _forbidden(modules) == []


def test_the_command_line_imports_a_command_when_it_runs() -> None:
    modules = _modules(
        "import json, sys\n"
        "from ambient.cli.main import cli\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert not [m for m in modules if m.startswith("ambient.cli.") and m not in {
        "ambient.cli.app", "ambient.cli.client", "ambient.cli.lazy", "ambient.cli.main",
    }]  # fmt: skip
