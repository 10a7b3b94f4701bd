"""The shared option decorators (``cli.app.cluster_options``, ``path_option``) on the commands
that run against a cluster themselves: each command's help lists the same options, in the same
order, with the same texts as when each wrote its own ``click.option`` blocks."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ambient.cli.main import cli

OPTIONS = {
    "controlplane": [
        "--config", "--kubeconfig", "--context", "--listen", "--join-listen", "--xds-listen",
        "--monitoring-listen", "--watch", "--api-socket", "--track-health",
        "--workload-cert-ttl", "--waypoint-image", "--netns-addresses", "--state-dir",
        "--log-level", "--help",
    ],
    "ztunnel": [
        "--node", "--control-plane", "--xds", "--node-ip", "--node-agent-socket",
        "--kubeconfig", "--context", "--in-cluster", "--token-file", "--ca-root", "--pod-name",
        "--pod-namespace", "--pod-uid", "--service-account", "--state-dir", "--log-level",
        "--help",
    ],
    "up": [
        "--state-dir", "--log-level", "--single-process", "--cert-ttl", "--netns",
        "--kubeconfig", "--context", "--nodes", "--control-plane", "--node-ip", "--ca-root",
        "--help",
    ],
    "node-agent": [
        "--node", "--kubeconfig", "--context", "--ztunnel-socket", "--netns-dir",
        "--install-cni", "--owner-daemonset", "--cni-run-dir", "--cni-bin-dir",
        "--cni-conf-dir", "--host-run-dir", "--plugin-python", "--exclude-namespace",
        "--log-level", "--help",
    ],
}  # fmt: skip
KUBECONFIG_HELP = {
    "controlplane": "Instead of --config: be the controller of this cluster (also $KUBECONFIG, "
    "~/.kube/config or in-cluster, when --config is not given).",
    "ztunnel": "In a cluster: request this ztunnel's token (TokenRequest, bound to its pod, "
    "audience istio-ca) with this kubeconfig's credentials.",
    "up": "Run nodes of this Kubernetes cluster (with --nodes) instead of a folder's mesh.",
    "node-agent": "The cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
}
# FILE options, and whether the file must exist
FILES = {
    "controlplane": {"kubeconfig": False, "api_socket": False},
    "ztunnel": {
        "node_agent_socket": False, "kubeconfig": True, "token_file": False, "ca_root": True,
    },
    "up": {"kubeconfig": False, "ca_root": True},
    "node-agent": {"kubeconfig": False},
}  # fmt: skip


def _command(name: str) -> click.Command:
    command = cli.get_command(click.Context(cli), name) if isinstance(cli, click.Group) else None
    assert command is not None
    return command


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_help_lists_the_same_options_in_order(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    options = result.output.split("\nOptions:\n", 1)[1]
    listed = re.findall(r"^  (?:-\w, )?(--[\w-]+)", options, re.MULTILINE)
    assert listed == OPTIONS[name]
    assert re.search(r"^  --kubeconfig FILE ", result.output, re.MULTILINE)
    assert re.search(r"^  --context TEXT +Kubeconfig context\.$", result.output, re.MULTILINE)
    text = " ".join(result.output.split())
    assert " ".join(KUBECONFIG_HELP[name].split()) in text


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_file_options_are_optional_paths(name: str) -> None:
    params = {p.name: p for p in _command(name).params}
    assert params["kube_context"].default is None
    for param_name, exists in FILES[name].items():
        param = params[param_name]
        assert isinstance(param.type, click.Path), param_name
        assert (param.type.exists, param.type.dir_okay) == (exists, False), param_name
        assert param.default is None and not param.required, param_name


@pytest.mark.parametrize("option", ["--kubeconfig", "--ca-root"])
def test_a_missing_file_that_must_exist_is_a_usage_error(option: str, tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    result = CliRunner().invoke(
        cli, ["ztunnel", "--node", "n", "--control-plane", "127.0.0.1:1", option, str(missing)]
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "does not exist" in result.output
