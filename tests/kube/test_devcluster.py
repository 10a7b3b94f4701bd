"""scripts/dev-cluster: a real control plane from Go modules, side by side, stopped cleanly."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambient.devcluster import DevCluster
from ambient.devcluster.build import Pins
from tests.kube.conftest import Kubectl, processes_mentioning

pytestmark = [pytest.mark.slow, pytest.mark.kube]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dev-cluster"


def dev_cluster_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_ready_and_usable(dev_cluster: DevCluster, kubectl: Kubectl) -> None:
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(kubectl("version", "-o", "json").stdout)
    release = Pins.load().kubernetes
    assert version["clientVersion"]["gitVersion"] == release
    assert version["serverVersion"]["gitVersion"] == release
    assert version["serverVersion"]["minor"] == release.split(".")[1]
    assert kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name").stdout == (
        "serviceaccount/default\n"
    )
    kubectl("create", "namespace", "devcluster-smoke")
    kubectl("create", "configmap", "c1", "-n", "devcluster-smoke", "--from-literal=k=v")
    got = kubectl("get", "configmap", "c1", "-n", "devcluster-smoke", "-o", "jsonpath={.data.k}")
    assert got.stdout == "v"
    # The controller-manager runs: it gives the new namespace its default ServiceAccount.
    kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", "devcluster-smoke", "--timeout=60s"
    )
    kubectl("delete", "namespace", "devcluster-smoke", "--wait=false")


def test_services_get_vips_from_the_service_range(kubectl: Kubectl) -> None:
    kubectl("create", "service", "clusterip", "vip-probe", "--tcp=80:8080", "-n", "default")
    ip = kubectl("get", "service", "vip-probe", "-n", "default", "-o", "jsonpath={.spec.clusterIP}")
    kubectl("delete", "service", "vip-probe", "-n", "default")
    assert ip.stdout.startswith("10.96."), ip.stdout


def test_a_second_cluster_beside_the_first_then_down(
    dev_cluster: DevCluster, kubectl: Kubectl, tmp_path: Path
) -> None:
    folder = tmp_path / "second"
    started = dev_cluster_cli("up", str(folder))
    assert started.returncode == 0, started.stdout + started.stderr
    second = Kubectl(folder / "bin" / "kubectl")
    try:
        assert second("get", "--raw", "/readyz").stdout.strip() == "ok"
        state = json.loads((folder / "cluster.json").read_text())
        assert state["server"] != dev_cluster.server
        second("create", "namespace", "only-in-second")
        absent = kubectl("get", "namespace", "only-in-second", check=False)
        assert absent.returncode != 0 and "NotFound" in absent.stderr
        assert len(processes_mentioning(folder)) == 4  # etcd and the three control-plane programs
    finally:
        stopped = dev_cluster_cli("down", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    assert processes_mentioning(folder) == []
    assert not folder.exists()
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"  # the first one is untouched


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_component_that_cannot_start_is_named_and_nothing_is_left(
    dev_cluster: DevCluster, tmp_path: Path, taken_port: int
) -> None:
    folder = tmp_path / "broken"
    failed = dev_cluster_cli("up", str(folder), "--apiserver-port", str(taken_port))
    assert failed.returncode == 1
    assert "kube-apiserver failed to start" in failed.stderr
    assert "address already in use" in failed.stderr  # the tail of its log
    assert "Traceback" not in failed.stderr
    assert processes_mentioning(folder) == []  # etcd, already running, was stopped too
    assert sorted(p.name for p in folder.iterdir()) == ["logs"]  # the logs stay, the data went


def test_a_folder_with_a_running_cluster_is_refused(dev_cluster: DevCluster) -> None:
    """(The other bad folders: tests/unit/devcluster/test_cli_errors.py.)"""
    running = dev_cluster_cli("up", str(dev_cluster.dir))
    assert running.returncode == 1 and "already runs" in running.stderr
    assert "Traceback" not in running.stderr
    assert (dev_cluster.dir / "cluster.json").is_file()  # and left alone
