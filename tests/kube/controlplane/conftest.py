"""The control plane as a controller of the dev cluster, with its own ServiceAccount's token.

``controlplane`` (one per test module) is a real ``ambient controlplane --kubeconfig``
process authenticated as ``istio-system/istiod`` (the RBAC ``ambient install``
creates; not admin). Tests subscribe to it as ztunnels do (``Subscriber``: a
ztunnel pod's service-account token, an ``XdsClient`` into a ``ProxyState`` and an
``L7Config``) and act on the cluster with the admin kubeconfig (``admin`` client,
``KubeletStandIn`` for the kubelet's part).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ambient.devcluster import DevCluster
from ambient.kube.api import ClusterTarget, KubeClient, load_config
from ambient.kube.kinds import NAMESPACE
from ambient.local.nodeclients import TokenAuth, token_xds_client
from ambient.state.proxy import ProxyState
from ambient.waypoint.config import L7Config
from tests.kube.conftest import Kubectl
from tests.kube.kubelet import KubeletStandIn
from tests.kube.ztunnel_pods import ZtunnelPods

START_TIMEOUT = 60.0


def ambient(
    *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambient", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture(scope="module")
def installed(dev_cluster: DevCluster) -> DevCluster:
    done = ambient("install", "--kubeconfig", str(dev_cluster.kubeconfig))
    assert done.returncode == 0, done.stderr
    return dev_cluster


def service_account_kubeconfig(
    cluster: DevCluster, kubectl: Kubectl, path: Path, account: str = "istiod"
) -> Path:
    """A kubeconfig that authenticates as ``istio-system/<account>`` with a TokenRequest token."""
    token = kubectl(
        "create", "token", account, "-n", "istio-system", "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": cluster_entry["name"], "user": account}}
        ],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class RunningPlane:
    process: subprocess.Popen[bytes]
    state: Path
    log: Path
    info: dict[str, Any]
    admin_kubeconfig: Path | None = None  # what Subscribers make their ztunnel pods with

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def spawn_plane(kubeconfig: Path, state: Path, log: Path) -> RunningPlane:
    """``ambient controlplane --kubeconfig`` as a process (not waiting for it). It gets
    SIGTERM if pytest dies (``setpriv --pdeathsig``: no Python between fork and exec in
    this gRPC-using process)."""
    state.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "--",
             sys.executable, "-m", "ambient", "controlplane", "--kubeconfig", str(kubeconfig),
             "--state-dir", str(state), "--listen", "127.0.0.1:0",
             "--xds-listen", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return RunningPlane(process, state, log, {})


def start_plane(
    kubeconfig: Path, state: Path, log: Path, timeout: float = START_TIMEOUT
) -> RunningPlane:
    """``ambient controlplane --kubeconfig`` as a process; returns once it serves."""
    plane = spawn_plane(kubeconfig, state, log)
    info_file = state / "controlplane.json"
    deadline = time.monotonic() + timeout
    while not info_file.exists():  # written once every kind is listed and the ports serve
        if plane.process.poll() is not None or time.monotonic() > deadline:
            plane.process.kill()
            plane.process.wait()
            pytest.fail(
                f"the control plane did not start:\n{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.1)
    plane.info = json.loads(info_file.read_text())
    return plane


def stop_plane(plane: RunningPlane) -> None:
    plane.process.send_signal(signal.SIGTERM)
    try:
        plane.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        plane.process.kill()
        plane.process.wait()


@pytest.fixture(scope="module")
def sa_kubeconfig(
    installed: DevCluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return service_account_kubeconfig(
        installed, kubectl, tmp_path_factory.mktemp("sa") / "kubeconfig"
    )


@pytest.fixture(scope="module")
def controlplane(
    installed: DevCluster, sa_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlane]:
    folder = tmp_path_factory.mktemp("cp")
    plane = start_plane(sa_kubeconfig, folder / "state", folder / "controlplane.log")
    plane.admin_kubeconfig = installed.kubeconfig
    yield plane
    stop_plane(plane)


@pytest.fixture
async def admin(installed: DevCluster) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_config(ClusterTarget(installed.kubeconfig)))
    yield client
    await client.close()


@pytest.fixture
async def kubelet(admin: KubeClient) -> AsyncIterator[KubeletStandIn]:
    stand_in = KubeletStandIn(admin)
    yield stand_in
    await stand_in.close()


_counter = itertools.count()


@pytest.fixture
async def namespace(admin: KubeClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh namespace for one test (deleted after it)."""
    name = f"t{os.getpid() % 1000}-{next(_counter)}-{request.node.name[5:20].replace('_', '-')}".lower().strip(
        "-"
    )
    await admin.create(
        NAMESPACE.path(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await admin.delete(NAMESPACE.path(None, name))


class Subscriber:
    """A ztunnel's view of the control plane: an XdsClient into a ProxyState, authenticated
    as a cluster's ztunnel is — its service-account token bound to its pod on ``node``
    (made by the kubelet stand-in, ``ZtunnelPods``), over TLS to the control plane."""

    def __init__(self, plane: RunningPlane, node: str) -> None:
        self.plane, self.node = plane, node
        self.state = ProxyState(node)
        self.l7 = L7Config()
        self.client: Any = None
        self._changed: Any = None
        self._admin: KubeClient | None = None
        self._pods: ZtunnelPods | None = None

    async def __aenter__(self) -> Subscriber:
        info, admin_kubeconfig = self.plane.info, self.plane.admin_kubeconfig
        assert admin_kubeconfig is not None, "the RunningPlane needs its admin_kubeconfig"
        self._admin = KubeClient(load_config(ClusterTarget(admin_kubeconfig)))
        self._pods = ZtunnelPods(self._admin, admin_kubeconfig, self.plane.state.parent)
        pod = await self._pods.start(self.node)
        roots = await asyncio.to_thread(Path(info["node_ca_root"]).read_bytes)
        self._changed = asyncio.Event()
        self.state.on_change(lambda _: self._changed.set())
        self.l7.on_change(lambda _: self._changed.set())
        auth = TokenAuth(pod.token_source(), roots)
        self.client = token_xds_client(info["xds_address"], self.node, self.state, auth, l7=self.l7)
        self.client.start()
        async with asyncio.timeout(20):
            await self.client.synced.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        if self._pods is not None:
            await self._pods.close()
        if self._admin is not None:
            await self._admin.close()

    async def wait(self, check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """Until ``check()`` is truthy, re-checked on every change pushed to this node."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    result = check()
                    if result:
                        return result
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"node {self.node}: timed out after {timeout:g}s waiting for {what or check}\n"
                f"control plane log tail:\n{self.plane.log_text()[-2500:]}"
            ) from None

    def workload(self, namespace: str, name: str) -> Any:
        return self.state.workloads.get(f"Kubernetes//Pod/{namespace}/{name}")

    def service(self, namespace: str, name: str) -> Any:
        return self.state.services.get(f"{namespace}/{name}.{namespace}.svc.cluster.local")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
