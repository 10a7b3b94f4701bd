"""``ambient ztunnel`` in a cluster: which options go together, and a ztunnel that cannot get
its first token exits 1 naming why (no traceback, no hang)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ambient.cli.main import cli

BASE = ["ztunnel", "--node", "node-1", "--control-plane", "127.0.0.1:1"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root-cert.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig of an API server that is not there (port 1)."""
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--ca-root", "{root}"], "--ca-root goes with --kubeconfig, --in-cluster or --token-file"),
        (["--token-file", "t", "--in-cluster"], "give one of --kubeconfig/--context"),
        (["--token-file", "t"], "--ca-root is needed in a cluster"),
        (["--kubeconfig", "{kubeconfig}", "--ca-root", "{root}"], "--pod-name (or $POD_NAME)"),
    ],
)
def test_options_that_do_not_go_together(
    extra: list[str], complaint: str, root: Path, kubeconfig: Path
) -> None:
    args = [a.format(root=root, kubeconfig=kubeconfig) for a in extra]
    result = CliRunner(env={"POD_NAME": None}).invoke(cli, [*BASE, *args])
    assert result.exit_code == 2, result.output
    assert complaint in result.output


def test_no_first_token_is_a_clear_exit(root: Path, kubeconfig: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ambient", *BASE, "--kubeconfig", str(kubeconfig),
         "--ca-root", str(root), "--pod-name", "ztunnel-abc"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "error: ztunnel node-1 cannot authenticate: TokenRequest for istio-system/ztunnel" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "ambient", *BASE, "--token-file", str(tmp_path / "none"),
         "--ca-root", str(root)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "cannot authenticate: cannot read token file" in missing.stderr
