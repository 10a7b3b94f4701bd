"""``ambient up --netns`` (ztunnels as processes): ``kill -9`` of a node's ztunnel.

The supervisor restarts it; the new process gets the node's pods from the node
agent's socket, opens its in-pod listeners again inside the namespaces (which
outlived the old process, with their redirection rules) and traffic recovers,
still reaching the application from the caller's address.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import Mesh, pid_alive, wait_for
from tests.netns.test_capture import MESH_DIR, curl, pod_ip

pytestmark = pytest.mark.slow


def ztunnel_pid(mesh: Mesh, node: str) -> int | None:
    """The pid of ``node``'s ztunnel process (its command line names the mesh's state folder)."""
    wanted = ["ztunnel", "--node", node]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        joined = " ".join(argv)
        if " ".join(wanted) in joined and str(mesh.state_dir) in joined:
            return int(entry.name)
    return None


def ztunnel_ready(mesh: Mesh, node: str) -> bool:
    components = {c["name"]: c for c in mesh.status()["components"]}
    return bool(components[f"ztunnel/{node}"]["ready"])


def test_a_killed_ztunnel_is_restarted_and_its_pods_traffic_recovers(tmp_path: Path) -> None:
    mesh = Mesh(MESH_DIR, tmp_path / "state", tmp_path / "up.log", up_args=("--netns",))
    mesh.start(wait=60)
    try:
        web, orders = pod_ip(mesh, "web"), pod_ip(mesh, "orders")
        assert curl(mesh, f"http://{web}:8080/", source="deploy/orders").returncode == 0
        old = ztunnel_pid(mesh, "node-1")  # web's node: its in-pod listeners die with it
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_for(f"ztunnel pid {old} to die", lambda: not pid_alive(old), timeout=10)
        wait_for(
            "ztunnel node-1 to be restarted and ready",
            lambda: (
                ztunnel_pid(mesh, "node-1") not in (None, old) and ztunnel_ready(mesh, "node-1")
            ),
            timeout=30,
            every=0.2,
        )
        listeners = mesh.json("zc", "all", "--node", "node-1")["listeners"]
        web_listeners = next(v for k, v in listeners.items() if "web" in k)
        assert web_listeners["redirected"] and web_listeners["hbone15008"]
        wait_for(
            "traffic to web to recover",
            lambda: curl(mesh, f"http://{web}:8080/", source="deploy/orders").returncode == 0,
            timeout=20,
            every=0.2,
        )
        answer = json.loads(curl(mesh, f"http://{web}:8080/", source="deploy/orders").stdout)
        assert answer["peer"].rpartition(":")[0] == orders
        # and web's outbound capture works again too (web -> orders, over HBONE)
        out = curl(mesh, "http://orders:8080/")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    finally:
        mesh.stop()
        mesh.run("down")
