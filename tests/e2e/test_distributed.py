"""The distributed mode: the control plane as its own process, a ztunnel process per node.

Nothing runs the pods' processes in this mode yet, so the test starts the one app it
needs itself, on the address the control plane allocated to its pod, and plays the
client pod with curl through node-1's ztunnel (SOCKS5 on the client pod's address).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from ambient.identity.certs import generate_key_and_csr
from ambient.identity.nodecreds import NodeCredentials
from ambient.identity.spiffe import SpiffeId
from ambient.xds.ca_client import CaClient, CaClientError
from tests.e2e.harness import (
    AMBIENT,
    REPO,
    TWO_NODE_MESH,
    acquire_mesh_lock,
    ambient,
    clean_env,
    release_mesh_lock,
    wait_for,
    wait_mesh_addresses_free,
)
from tests.e2e.manifests import manifest, service

pytestmark = pytest.mark.slow

NODE_IPS = {"node-1": "127.1.0.1", "node-2": "127.1.0.2"}
WEB = "spiffe://cluster.local/ns/shop/sa/web"
ORDERS = "spiffe://cluster.local/ns/shop/sa/orders"


# a second Service of the orders pods
PAYMENTS = service(
    "shop", "payments", [{"name": "http", "port": 9090, "targetPort": 8080}],
    selector={"app": "orders"},
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    """A process of ours, its output in a log file; stopped with SIGINT, then SIGKILL."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env or clean_env(), cwd=REPO
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.popen.args!r} exited {self.popen.returncode}:\n{self.log()}")
            return text in self.log()

        wait_for(f"{text!r} in {self.log_path.name}", seen, timeout)

    def kill9(self) -> None:
        self.popen.kill()
        self.popen.wait(10)

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode


def http_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def ready(node: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{NODE_IPS[node]}:15021/healthz/ready", timeout=2):
            return True
    except (OSError, urllib.error.URLError):
        return False


def config_dump(node: str) -> dict[str, Any]:
    dump: dict[str, Any] = wait_for(
        f"{node}'s config_dump", lambda: http_json(f"http://{NODE_IPS[node]}:15000/config_dump")
    )
    return dump


def curl(client_ip: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-m", "5", "--socks5-hostname", f"{client_ip}:15080", url],
        capture_output=True,
        text=True,
        timeout=10,
        env=clean_env(),
    )


class Mesh:
    """Addresses and processes of one distributed mesh under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config"
        self.config.mkdir()
        (self.config / "mesh.yaml").write_text(TWO_NODE_MESH)
        self.cp_state = root / "cp"
        self.ca = f"127.0.0.1:{free_port()}"
        self.join = f"127.0.0.1:{free_port()}"
        self.xds = f"127.0.0.1:{free_port()}"
        self.procs: list[Proc] = []

    def start(self, args: list[str], log: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args, self.root / log, env)
        self.procs.append(proc)
        return proc

    def controlplane(self) -> Proc:
        proc = self.start(
            [
                AMBIENT,
                "--state-dir",
                str(self.cp_state),
                "controlplane",
                "--config",
                str(self.config),
                "--listen",
                self.ca,
                "--join-listen",
                self.join,
                "--xds-listen",
                self.xds,
            ],
            "controlplane.log",
        )
        proc.wait_log("controlplane ready on ")
        return proc

    def node_state(self, node: str) -> Path:
        return self.root / node

    def join_node(self, node: str) -> None:
        token = ambient("node", "token", "create", node, state_dir=self.cp_state, check=True)
        ambient(
            "node",
            "join",
            "--control-plane",
            self.join,
            "--token",
            token.stdout.strip(),
            "--node",
            node,
            "--ca-root",
            str(self.cp_state / "node-ca" / "root-cert.pem"),
            state_dir=self.node_state(node),
            check=True,
        )

    def ztunnel(self, node: str) -> Proc:
        proc = self.start(
            [
                AMBIENT,
                "--state-dir",
                str(self.node_state(node)),
                "ztunnel",
                "--node",
                node,
                "--node-ip",
                NODE_IPS[node],
                "--control-plane",
                self.ca,
                "--xds",
                self.xds,
            ],
            f"ztunnel-{node}.log",
        )
        wait_for(f"ztunnel {node} ready", lambda: ready(node), 30)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    acquire_mesh_lock()
    try:
        wait_mesh_addresses_free()
        mesh = Mesh(tmp_path)
        try:
            yield mesh
        finally:
            mesh.close()
    finally:
        release_mesh_lock()


def pod_ip(dump: dict[str, Any], app: str) -> str:
    for workload in dump["workloads"]:
        if workload["workloadName"] == app:
            ip: str = workload["workloadIps"][0]
            return ip
    pytest.fail(f"no workload {app} in {dump['node']}'s config_dump")


def test_control_plane_as_a_service(mesh: Mesh) -> None:
    controlplane = mesh.controlplane()
    info = json.loads((mesh.cp_state / "controlplane.json").read_text())
    assert info["pid"] == controlplane.popen.pid
    assert info["nodes"] == NODE_IPS
    for node in NODE_IPS:
        mesh.join_node(node)
        mesh.ztunnel(node)
    dump = config_dump("node-2")
    web_ip, orders_ip = pod_ip(dump, "web"), pod_ip(dump, "orders")
    app = mesh.start(
        [sys.executable, str(REPO / "examples" / "shop" / "app.py"), "--name", "orders"],
        "orders.log",
        {**clean_env(), "POD_IP": orders_ip},
    )
    app.wait_log("listening on")

    # (a) web (node-1) -> orders (node-2) over HBONE, with web's identity.
    answer = curl(web_ip, "http://orders:8080/hello")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["peer_identity"] == WEB

    # (b) the control plane dies (kill -9) under load: no request fails.
    results: list[subprocess.CompletedProcess[str]] = []
    done = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            results.append(curl(web_ip, "http://orders:8080/load"))
            time.sleep(0.05)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        wait_for("requests before the kill", lambda: len(results) >= 5, 30)
        controlplane.kill9()
        killed_at = len(results)
        wait_for("requests after the kill", lambda: len(results) >= killed_at + 15, 30)
    finally:
        done.set()
        worker.join(30)
    failed = [r for r in results if r.returncode != 0]
    assert not failed, [r.stderr for r in failed]
    assert all(json.loads(r.stdout)["peer_identity"] == WEB for r in results)
    for node in NODE_IPS:
        assert ready(node)
    wait_for(
        "node-1 noticing the control plane is gone",
        lambda: "keeping last config" in mesh.procs[1].log(),
        30,
    )

    # (c) change the configuration while it is down; restart it on the same ports.
    (mesh.config / "mesh.yaml").write_text(manifest(TWO_NODE_MESH, PAYMENTS))
    mesh.controlplane()

    def has_payments(node: str) -> bool:
        dump = http_json(f"http://{NODE_IPS[node]}:15000/config_dump")
        return bool(dump) and any(s["name"] == "payments" for s in dump["services"])

    for node in NODE_IPS:
        wait_for(f"the new service on {node}", functools.partial(has_payments, node), 30)
    answer = curl(web_ip, "http://payments:9090/new")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["peer_identity"] == WEB

    # (d) node-1 may not obtain orders' identity: its pod runs on node-2.
    with pytest.raises(CaClientError) as refused:
        asyncio.run(issue_as("node-1", mesh, ORDERS))
    assert "PERMISSION_DENIED" in str(refused.value)
    assert refused.value.details == (
        f"node 'node-1' may not obtain a certificate for {ORDERS}: "
        "no pod with that identity is scheduled on 'node-1' (it runs on node-2)"
    )
    # ... while node-1 may obtain web's.
    chain, _ = asyncio.run(issue_as("node-1", mesh, WEB))
    assert chain.startswith(b"-----BEGIN CERTIFICATE-----")

    # A clean stop: SIGINT ends every process with status 0 and removes controlplane.json.
    for proc in reversed(mesh.procs[-1:] + mesh.procs[1:3]):
        assert proc.stop() == 0, proc.log()
    assert not (mesh.cp_state / "controlplane.json").exists()


async def issue_as(node: str, mesh: Mesh, identity: str) -> tuple[bytes, bytes]:
    credentials = NodeCredentials.load(mesh.node_state(node) / "node", node)
    spiffe = SpiffeId.parse(identity)
    _, csr = generate_key_and_csr(spiffe)
    async with CaClient(mesh.ca, credentials) as client:
        return await client.issue(spiffe, csr)


def test_node_join_refuses_a_used_token(mesh: Mesh) -> None:
    mesh.controlplane()
    mesh.join_node("node-1")
    token = ambient("node", "token", "create", "node-2", state_dir=mesh.cp_state, check=True)
    args = [
        "node",
        "join",
        "--control-plane",
        mesh.join,
        "--token",
        token.stdout.strip(),
        "--node",
        "node-2",
        "--ca-root",
        str(mesh.cp_state / "node-ca" / "root-cert.pem"),
    ]
    ambient(*args, state_dir=mesh.node_state("node-2"), check=True)
    again = ambient(*args, state_dir=mesh.root / "other", check=False)
    assert again.returncode == 1
    assert again.stderr.startswith("error: joining node node-2 refused by control plane")
    assert again.stderr.count("\n") == 1, again.stderr
    assert "the join token for node node-2 was already used at" in again.stderr
    assert os.path.isdir(mesh.node_state("node-2") / "node")
