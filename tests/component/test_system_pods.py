"""``ambient up``'s own processes as pods: the process model's real supervisor runs two
stand-in processes as its ``ztunnel-<node>`` and ``controlplane`` system pods (a ztunnel
stand-in answers ``:15021/healthz/ready`` on its own loopback address, as a ztunnel
does), its control API serves them, and the CLI reads their logs (``get`` of them, which needs
the control plane's manifests too: tests/unit/cli/test_logs_selector.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ambient.cli.main import cli
from ambient.local.api import ControlApi
from ambient.local.processes import DistributedMesh
from ambient.local.statedir import StateDir

NODE_IP = "127.77.0.7"  # a loopback address no mesh of the tests uses

READINESS = f"""
import http.server
class Ready(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("{NODE_IP}", 15021), Ready)
for i in range(12):
    print(f"10:00:{{i:02}} INFO  ztunnel line {{i}}", flush=True)
server.serve_forever()
"""


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[DistributedMesh]:
    config = tmp_path / "config"
    config.mkdir()
    state = StateDir(tmp_path / "state")
    state.create()
    mesh = DistributedMesh(config, state)
    api = ControlApi(mesh)
    path = await api.start()
    state.write_mesh_file({"pid": os.getpid(), "socket": path})
    sleeper = [sys.executable, "-c", "import time; print('cp up', flush=True); time.sleep(300)"]
    await mesh.system.start_pod(mesh._system_pod("controlplane", sleeper))
    await mesh.system.start_pod(
        mesh._system_pod("ztunnel-node-7", [sys.executable, "-c", READINESS])
    )
    mesh.nodes["node-7"] = NODE_IP
    try:
        yield mesh
    finally:
        await api.close()
        await mesh.system.close()


async def _ready(mesh: DistributedMesh) -> list[dict[str, Any]]:
    for _ in range(200):  # bounded: 20 s
        pods = await mesh.system_pods()
        if pods[1]["ready"] and "line 11" in _log(mesh, "ztunnel-node-7"):
            return pods
        await asyncio.sleep(0.1)
    raise AssertionError(f"the ztunnel stand-in never became ready: {pods}")


def _log(mesh: DistributedMesh, name: str) -> str:
    path = mesh.state.root / "logs" / f"ambient-system_{name}_{name}.log"
    return path.read_text() if path.exists() else ""


async def ambient(mesh: DistributedMesh, *args: str) -> Result:
    argv = ["--state-dir", str(mesh.state.root), *args]
    return await asyncio.to_thread(CliRunner().invoke, cli, argv)


async def test_the_supervisors_processes_are_pods_of_ambient_system(
    mesh: DistributedMesh,
) -> None:
    controlplane, ztunnel = await _ready(mesh)
    assert (ztunnel["name"], ztunnel["node"], ztunnel["ip"]) == (
        "ztunnel-node-7",
        "node-7",
        NODE_IP,
    )
    assert ztunnel["labels"] == {"app": "ztunnel", "istio.io/dataplane-mode": "none"}
    assert ztunnel["containers"][0]["state"] == "running"
    assert controlplane["labels"] == {"app": "istiod", "istio": "pilot"}
    assert not controlplane["ready"]  # no control API answers on its socket here
    logs = await ambient(mesh, "logs", "-n", "istio-system", "-l", "app=ztunnel", "--prefix")
    assert logs.stdout.splitlines() == [
        f"[pod/ztunnel-node-7/ztunnel-node-7] 10:00:{i:02} INFO  ztunnel line {i}"
        for i in range(2, 12)
    ], logs.output
    one = await ambient(mesh, "logs", "ds/ztunnel", "--tail", "1")
    assert one.stdout == "10:00:11 INFO  ztunnel line 11\n"
