"""``ambient up --kubeconfig K --nodes node-1,node-2`` on a host the test makes (root).

The host is a network namespace with a dev cluster of its own inside (its API server
on the host's loopback), so the pods' addresses (10.244.N.x on the nodes' dummy
interfaces) are added to that namespace only. Everything is driven as a user would:
``ambient up`` as a process, ``kubectl`` and ``ambient`` commands run "on the host".
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.manifests import (
    deployment,
    manifest,
    namespace,
    python,
    service,
    service_account,
)
from tests.kube.hosts import NetnsCluster, NetnsHost
from tests.netns.conftest import netns_unavailable

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.root]

REPO = Path(__file__).resolve().parents[3]
APP = REPO / "examples" / "shop" / "app.py"


@pytest.fixture(scope="module")
def host_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    host = NetnsHost("a")
    try:
        cluster = NetnsCluster(host, tmp_path_factory.mktemp("kube") / "cluster")
        try:
            done = host.ambient("install", "--kubeconfig", str(cluster.kubeconfig), timeout=180)
            assert done.returncode == 0, done.stderr
            yield cluster
        finally:
            cluster.down()
    finally:
        host.remove()


@dataclass
class Up:
    cluster: NetnsCluster
    process: subprocess.Popen[bytes]
    state: Path
    log: Path
    started: float

    @property
    def host(self) -> NetnsHost:
        return self.cluster.host

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, timeout=timeout)

    def ambient(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.host.ambient(
            "--kubeconfig", str(self.cluster.kubeconfig), *args, timeout=timeout
        )

    def json(self, *args: str) -> Any:
        done = self.kubectl(*args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def get(self, *args: str) -> Any:
        """The object, or None if it does not exist (yet)."""
        done = self.kubectl(*args, "-o", "json")
        return json.loads(done.stdout) if done.returncode == 0 else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_for(check: Any, what: str, up: Up, timeout: float = 90, interval: float = 0.2) -> Any:
    """Poll ``check`` (kubectl/CLI reads: the API server has no signal to wait on here)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if up.process.poll() is not None:
            pytest.fail(f"ambient up exited ({up.process.returncode}):\n{up.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{up.log_text()[-4000:]}")
        time.sleep(interval)


@pytest.fixture(scope="module", params=["addresses", "netns"])
def up(
    host_cluster: NetnsCluster, tmp_path_factory: pytest.TempPathFactory, request: Any
) -> Iterator[Up]:
    """``ambient up`` with pod addresses on the host, then (a second run of the same nodes,
    their pods kept) with ``--netns``."""
    folder = tmp_path_factory.mktemp("up")
    argv = [
        sys.executable,
        "-m",
        "ambient",
        "up",
        "--kubeconfig",
        str(host_cluster.kubeconfig),
        "--nodes",
        "node-1,node-2",
        "--state-dir",
        str(folder / "state"),
        *(["--netns"] if request.param == "netns" else []),
    ]
    started = time.monotonic()
    process = host_cluster.host.spawn(argv, folder / "up.log")
    running = Up(host_cluster, process, folder / "state", folder / "up.log", started)
    try:
        yield running
    finally:
        running.stop()


def _ready(obj: dict[str, Any] | None, kind: str = "Ready") -> bool:
    return obj is not None and any(
        c.get("type") == kind and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def shop_app(name: str, replicas: int = 1, **fields: Any) -> dict[str, Any]:
    """examples/shop/app.py as Deployment ``name`` on port 8080, its traffic through the pod's
    tunnel port."""
    return deployment("shop", name, python(APP, "--name", name, "--port", "8080"),
                      replicas=replicas, service_account=name, ports=[8080], privileged=True,
                      annotations={"ambient.io/application-tunnel": "PROXY"},
                      image="shop/app:1", **fields)  # fmt: skip


# enrolled later, by label: not at first
SHOP = manifest(
    namespace("shop", ambient=False),
    service_account("shop", "web"),
    service_account("shop", "orders"),
    service("shop", "orders", [{"name": "http", "port": 8080, "targetPort": 8080}]),
    shop_app("web"),
    shop_app("orders", replicas=2,
             readinessProbe={"httpGet": {"path": "/api/health", "port": 8080}, "periodSeconds": 1}),
)  # fmt: skip


def test_nodes_and_ztunnels_come_up(up: Up) -> None:
    nodes = wait_for(
        lambda: (
            (n := up.json("get", "nodes")) and len([i for i in n["items"] if _ready(i)]) == 2 and n
        ),
        "both Nodes Ready",
        up,
    )
    for node in nodes["items"]:
        assert node["spec"]["podCIDR"].startswith("10.244.")
        assert node["metadata"]["annotations"]["ambient.io/kubelet-socket"]
    pods = wait_for(
        lambda: (
            (p := up.json("get", "pods", "-n", "istio-system", "-l", "app=ztunnel"))
            and len([i for i in p["items"] if _ready(i)]) == 2
            and p
        ),
        "both ztunnel pods Ready",
        up,
    )
    by_node = {p["spec"]["nodeName"]: p for p in pods["items"]}
    assert set(by_node) == {"node-1", "node-2"}
    for name, pod in by_node.items():
        assert pod["metadata"]["name"] == f"ztunnel-{name}"
        assert pod["status"]["podIP"].startswith("10.244.")


def test_mesh_by_label_without_restart_exec_and_annotation(up: Up) -> None:
    test_nodes_and_ztunnels_come_up(up)
    applied = up.host.apply(up.cluster.cluster.kubectl, SHOP)
    assert applied.returncode == 0, applied.stderr
    for name in ("web", "orders"):
        rolled = up.kubectl(
            "rollout", "status", f"deploy/{name}", "-n", "shop", "--timeout=90s", timeout=120
        )
        assert rolled.returncode == 0, rolled.stderr + up.log_text()[-3000:]
    before = {p["metadata"]["uid"]: p for p in up.json("get", "pods", "-n", "shop")["items"]}
    # plain TCP: no identity reaches the app
    plain = up.ambient(
        "exec", "-n", "shop", "deploy/web", "--", "curl", "-s", "http://orders:8080/"
    )
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["peer_identity"] is None
    labelled = up.kubectl("label", "namespace", "shop", "istio.io/dataplane-mode=ambient")
    assert labelled.returncode == 0, labelled.stderr

    def all_hbone() -> list[dict[str, Any]] | None:
        done = up.ambient("zc", "workloads", "--workload-namespace", "shop", "-o", "json")
        if done.returncode != 0:
            return None
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows if len(rows) == 3 and all(r["protocol"] == "HBONE" for r in rows) else None

    rows = wait_for(all_hbone, "every shop pod HBONE", up)
    # a Deployment's pods are one workload named after it (from their ReplicaSet owner), as
    # metrics and the dashboard's graph name them, not one workload per pod
    assert sorted((r["workloadName"], r["workloadType"]) for r in rows) == [
        ("orders", "deployment"),
        ("orders", "deployment"),
        ("web", "deployment"),
    ]
    meshed = up.ambient(
        "exec", "-n", "shop", "deploy/web", "--", "curl", "-s", "http://orders:8080/"
    )
    assert meshed.returncode == 0, meshed.stderr
    assert json.loads(meshed.stdout)["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    after = wait_for(
        lambda: (
            (
                pods := {
                    p["metadata"]["uid"]: p for p in up.json("get", "pods", "-n", "shop")["items"]
                }
            )
            and all(
                p["metadata"].get("annotations", {}).get("ambient.istio.io/redirection")
                == "enabled"
                for p in pods.values()
            )
            and pods
        ),
        "the redirection annotations",
        up,
    )
    assert set(after) == set(before)  # no pod was replaced...
    for uid, pod in after.items():  # ...nor restarted
        counts = [
            p["status"]["containerStatuses"][0]["restartCount"] for p in (before[uid], pod)
        ]  # (the netns run finds the pods of the first run, which ran once already)
        assert counts[0] == counts[1], uid
    up.kubectl("label", "namespace", "shop", "istio.io/dataplane-mode-")
    wait_for(
        lambda: (
            not any(
                p["metadata"].get("annotations", {}).get("ambient.istio.io/redirection")
                for p in up.json("get", "pods", "-n", "shop")["items"]
            )
        ),
        "the annotations removed",
        up,
    )


def test_ctrl_c_leaves_nodes_not_ready(up: Up) -> None:
    test_nodes_and_ztunnels_come_up(up)
    assert up.stop() == 0, up.log_text()[-3000:]
    nodes = up.json("get", "nodes")
    for node in nodes["items"]:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False", node["metadata"]["name"]
    addresses = up.host.run("ip", "-o", "addr", "show", "dev", "lo").stdout
    assert "10.244." not in addresses  # the pods' addresses went with the nodes
