"""Chaining ambient-cni into a node's network configuration, as istio-cni's install-cni does."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ambient.cli.main import cli
from ambient.cni import install, plugin
from tests.cni import HOST_PYTHON, invoke_plugin

BRIDGE = {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}
ENTRY = install.plugin_entry("/run/ambient-test", ["kube-system", "istio-system"])


def write(path: Path, conf: Any) -> Path:
    path.write_text(json.dumps(conf))
    return path


def conflist(*plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": list(plugins)}


def test_entry_is_appended_to_the_primary_conflist(tmp_path: Path) -> None:
    primary = write(tmp_path / "10-bridge.conflist", conflist(BRIDGE, {"type": "portmap"}))
    write(tmp_path / "20-other.conflist", conflist({"type": "macvlan"}))
    assert install.chain(tmp_path, ENTRY) == primary
    chained = json.loads(primary.read_text())
    assert chained["plugins"] == [BRIDGE, {"type": "portmap"}, ENTRY]
    assert chained["name"] == "k8s-pod-network" and chained["cniVersion"] == "1.0.0"
    assert stat.S_IMODE(primary.stat().st_mode) == 0o644
    assert json.loads((tmp_path / "20-other.conflist").read_text())["plugins"] == [
        {"type": "macvlan"}
    ]


def test_chaining_again_replaces_our_entry_and_moves_it_last(tmp_path: Path) -> None:
    old = {**ENTRY, "exclude_namespaces": []}
    primary = write(tmp_path / "10-net.conflist", conflist(BRIDGE, old, {"type": "portmap"}))
    install.chain(tmp_path, ENTRY)
    assert json.loads(primary.read_text())["plugins"] == [BRIDGE, {"type": "portmap"}, ENTRY]
    assert install.ensure_chained(tmp_path, ENTRY) is None  # nothing to do: nothing written


def test_a_single_plugin_conf_becomes_a_conflist(tmp_path: Path) -> None:
    write(tmp_path / "10-bridge.conf", {"cniVersion": "0.4.0", "name": "mynet", **BRIDGE})
    target = install.chain(tmp_path, ENTRY)
    assert target == tmp_path / "10-bridge.conflist"
    assert not (tmp_path / "10-bridge.conf").exists()
    assert json.loads(target.read_text()) == {
        "cniVersion": "0.4.0",
        "name": "mynet",
        "plugins": [{"name": "mynet", **BRIDGE}, ENTRY],
    }


def test_the_primary_is_the_first_valid_file_by_name(tmp_path: Path) -> None:
    (tmp_path / "00-broken.conflist").write_text("{not json")
    write(tmp_path / "01-empty.conflist", conflist())
    (tmp_path / "02-notes.txt").write_text("{}")
    write(tmp_path / "05-net.json", {"name": "n", **BRIDGE})
    write(tmp_path / "10-net.conflist", conflist(BRIDGE))
    assert install.primary_config(tmp_path) == tmp_path / "05-net.json"


def test_a_new_primary_takes_the_entry_from_the_old_one(tmp_path: Path) -> None:
    old = write(tmp_path / "20-old.conflist", conflist(BRIDGE))
    install.chain(tmp_path, ENTRY)
    new = write(tmp_path / "10-new.conflist", conflist({"type": "ptp"}))
    assert install.ensure_chained(tmp_path, ENTRY) == new
    assert json.loads(new.read_text())["plugins"][-1] == ENTRY
    assert json.loads(old.read_text())["plugins"] == [BRIDGE]


def test_no_network_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match="cluster's network plugin"):
        install.chain(tmp_path, ENTRY)


def test_unchain_removes_the_entry_and_the_executable(tmp_path: Path) -> None:
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf_dir.mkdir()
    bin_dir.mkdir()
    primary = write(conf_dir / "10-net.conflist", conflist(BRIDGE))
    install.install_binary(bin_dir)
    install.chain(conf_dir, ENTRY)
    assert install.unchain(conf_dir, bin_dir) == [primary]
    assert json.loads(primary.read_text())["plugins"] == [BRIDGE]
    assert not (bin_dir / "ambient-cni").exists()
    assert install.unchain(conf_dir, bin_dir) == []


def test_the_executable_is_the_plugin_with_the_nodes_python(tmp_path: Path) -> None:
    binary = install.install_binary(tmp_path, "/usr/bin/python3")
    content = binary.read_bytes()
    assert content.startswith(b"#!/usr/bin/python3 -IS\n")
    assert content.endswith(Path(plugin.__file__).read_bytes())
    assert os.access(binary, os.X_OK)
    before = binary.stat().st_mtime_ns
    install.install_binary(tmp_path, "/usr/bin/python3")
    assert binary.stat().st_mtime_ns == before  # unchanged: not rewritten under a runtime
    with pytest.raises(install.InstallError, match="absolute path"):
        install.install_binary(tmp_path, "python3")
    if Path(HOST_PYTHON).is_file():
        status, out, _ = invoke_plugin(binary, "VERSION", {"cniVersion": "1.0.0"})
        assert status == 0 and "1.0.0" in out["supportedVersions"]


def test_cni_install_command(tmp_path: Path) -> None:
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf_dir.mkdir()
    bin_dir.mkdir()
    runner = CliRunner()
    args = ["cni-install", "--cni-conf-dir", str(conf_dir), "--cni-bin-dir", str(bin_dir)]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 1 and "no network configuration" in refused.output
    primary = write(conf_dir / "10-net.conflist", conflist(BRIDGE))
    done = runner.invoke(
        cli, [*args, "--cni-run-dir", "/run/x", "--exclude-namespace", "istio-system"]
    )
    assert done.exit_code == 0, done.output
    entry = json.loads(primary.read_text())["plugins"][-1]
    assert entry == {
        "type": "ambient-cni",
        "agent_run_dir": "/run/x",
        "exclude_namespaces": ["istio-system"],
    }
    assert (bin_dir / "ambient-cni").is_file()
    removed = runner.invoke(cli, [*args, "--uninstall"])
    assert removed.exit_code == 0 and json.loads(primary.read_text())["plugins"] == [BRIDGE]
