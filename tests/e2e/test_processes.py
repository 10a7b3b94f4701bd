"""``ambient up``'s default process model: the control plane and each ztunnel as child processes.

One mesh for the module (web on node-1, orders on node-2, 4-second workload
certificates), driven through the CLI as a user would, plus one single-process mesh
for hot reload in that model. The last test kills ``up`` itself with SIGKILL.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    AMBIENT,
    REPO,
    SHOP,
    TWO_NODE_MESH,
    Mesh,
    clean_env,
    mesh_listeners,
    pid_gone,
    wait_for,
)

pytestmark = pytest.mark.slow

NODES = {"node-1": "127.1.0.1", "node-2": "127.1.0.2"}
WEB = "spiffe://cluster.local/ns/shop/sa/web"


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{app: orders}}
  ports: [{{name: http, port: {port}, targetPort: 8080}}]
"""

# A client in the web pod: one TCP connection (SOCKS5 to its ztunnel, HBONE to orders),
# HTTP/1.1 keep-alive requests every 0.1 s for SECONDS; it never reconnects.
STREAM = r"""
import json, os, socket, sys, time
from urllib.parse import urlsplit

proxy = urlsplit(os.environ["ALL_PROXY"])
seconds = float(sys.argv[1])
s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
s.sendall(b"\x05\x01\x00")
assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x03\x06orders" + (8080).to_bytes(2, "big"))
assert s.recv(10)[:2] == b"\x05\x00"
stream = s.makefile("rb")
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    n += 1
    s.sendall(f"GET /stream/{n} HTTP/1.1\r\nHost: orders\r\n\r\n".encode())
    status = stream.readline().split()[1].decode()
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = json.loads(stream.read(length))
    print("OK", n, status, body["path"], body["peer"], body["peer_identity"], flush=True)
    time.sleep(0.1)
print("DONE", n, flush=True)
"""


CLIENT = ("python3", "-c", STREAM, "13")


def write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(TWO_NODE_MESH)
    shutil.copy(SHOP / "app.py", folder / "app.py")
    return folder


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("processes")
    config = write_config(root / "config")
    mesh = Mesh(config, root / "state", root / "up.log", args=("--cert-ttl", "4s")).start()
    try:
        yield mesh
    finally:
        mesh.stop()


def components(mesh: Mesh) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in mesh.status()["components"]}


def component_pid(mesh: Mesh, name: str) -> int:
    match = re.search(r"\(pid (\d+)\)", components(mesh)[name]["detail"])
    assert match, components(mesh)[name]
    return int(match.group(1))


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def config_dump(node: str) -> dict[str, Any]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{NODES[node]}:15000/config_dump", timeout=5) as response:
        dump: dict[str, Any] = json.loads(response.read())
    return dump


def service_names(node: str) -> set[str]:
    return {s["name"] for s in config_dump(node)["services"]}


def wait_services(node: str, expected: set[str], timeout: float = 10) -> None:
    wait_for(
        f"services {sorted(expected)} on {node}",
        lambda: service_names(node) == expected,
        timeout=timeout,
    )


# -- the process model ------------------------------------------------------------------------


def test_control_plane_and_ztunnels_are_child_processes(mesh: Mesh) -> None:
    status = mesh.status()
    assert status["mode"] == "processes" and status["ready"]
    pids = {
        name: component_pid(mesh, name)
        for name in ("controlplane", "ztunnel/node-1", "ztunnel/node-2")
    }
    assert len(set(pids.values())) == 3 and mesh.pid not in pids.values()
    for name, pid in pids.items():
        # started by up's pod launcher (ambient.launcher): up never forks itself
        launcher = parent_of(pid)
        assert parent_of(launcher) == mesh.pid, name
        assert b"ambient.launcher.server" in Path(f"/proc/{launcher}/cmdline").read_bytes()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert name.split("/")[0].encode() in argv, argv
    # `zc` reads each ztunnel process's own view over its admin port
    workloads = mesh.json("zc", "workloads", "--node", "node-2", "--workload-namespace", "shop")
    assert {w["name"].split("-")[0]: w["protocol"] for w in workloads} == {
        "orders": "HBONE",
        "web": "HBONE",
    }
    answer = mesh.curl("http://orders:8080/hello")
    assert answer["peer_identity"] == WEB


def test_apply_and_delete_reach_every_ztunnel(mesh: Mesh, tmp_path: Path) -> None:
    manifest = tmp_path / "payments.yaml"
    manifest.write_text(SERVICE.format(name="payments", port=9090))
    assert mesh.ok("apply", "-f", str(manifest)).strip() == "service/payments created"
    for node in NODES:
        wait_services(node, {"orders", "payments"})
    assert mesh.curl("http://payments:9090/via-payments")["path"] == "/via-payments"
    bad = tmp_path / "bad.yaml"
    bad.write_text(SERVICE.format(name="bad", port="http"))
    refused = mesh.run("apply", "-f", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:1: Service/bad: spec.ports[0].port: expected an integer" in refused.stderr
    assert mesh.ok("delete", "-f", str(manifest)).strip() == "service/payments deleted"
    for node in NODES:
        wait_services(node, {"orders"})


def test_editing_the_config_folder_updates_the_mesh(mesh: Mesh) -> None:
    extra = mesh.config_dir / "extra.yaml"
    extra.write_text(SERVICE.format(name="catalog", port=7070))
    for node in NODES:
        wait_services(node, {"orders", "catalog"})
    # a bad edit is refused with the loader's error, and the running config stays
    extra.write_text(SERVICE.format(name="catalog", port=70000))
    wait_for(
        "the refusal of the bad edit in the log",
        lambda: (
            f"error: {extra}:1: Service/catalog: spec.ports[0].port: must be between" in mesh.log()
            and "the running configuration is unchanged" in mesh.log()
        ),
    )
    assert service_names("node-1") == {"orders", "catalog"}
    assert mesh.curl("http://catalog:7070/still")["path"] == "/still"
    extra.unlink()
    for node in NODES:
        wait_services(node, {"orders"})


# -- faults -----------------------------------------------------------------------------------


def steady(dump: dict[str, Any]) -> dict[str, Any]:
    """What a ztunnel knows, without what changes on its own (certificates, listeners)."""
    return {k: dump[k] for k in ("workloads", "services", "policies", "peerAuthentications")}


def test_killed_ztunnel_is_restarted_and_resyncs(mesh: Mesh) -> None:
    before = steady(config_dump("node-2"))
    old = component_pid(mesh, "ztunnel/node-2")
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        c = components(mesh)["ztunnel/node-2"]
        return c["ready"] and f"(pid {old})" not in c["detail"]

    wait_for("ztunnel node-2 to come back", restarted, timeout=20)
    assert "restarts 1" in components(mesh)["ztunnel/node-2"]["detail"]
    assert steady(config_dump("node-2")) == before
    assert mesh.curl("http://orders:8080/after-restart")["peer_identity"] == WEB


def certificate_starts(node: str) -> set[str]:
    return {c["not_before"] for c in config_dump(node)["certificates"] if c["identity"] == WEB}


def test_certificate_rotation_never_drops_a_connection(mesh: Mesh) -> None:
    seen: set[str] = set()
    client = subprocess.Popen(
        [
            AMBIENT,
            "--state-dir",
            str(mesh.state_dir),
            "exec",
            "-n",
            "shop",
            "deploy/web",
            "--",
            *CLIENT,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO,
    )
    try:
        while client.poll() is None:
            seen |= certificate_starts("node-1")
            time.sleep(0.5)
        out, err = client.communicate(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
    lines = out.splitlines()
    assert lines and lines[-1].startswith("DONE"), f"stdout: {out[-2000:]}\nstderr: {err}"
    oks = [line.split() for line in lines[:-1]]
    assert len(oks) >= 50 and all(o[2] == "200" and o[5] == WEB for o in oks), lines[:5]
    assert len({o[4] for o in oks}) == 1, "the app saw more than one connection"
    # 4-second certificates renewed at half-life: at least four generations seen, and new
    # connections use the current one
    assert len(seen) >= 4, seen
    assert mesh.curl("http://orders:8080/new")["peer_identity"] == WEB


def test_killed_control_plane_comes_back_with_applied_changes(mesh: Mesh, tmp_path: Path) -> None:
    manifest = tmp_path / "kept.yaml"
    manifest.write_text(SERVICE.format(name="kept", port=6060))
    mesh.ok("apply", "-f", str(manifest))
    wait_services("node-1", {"orders", "kept"})
    old = component_pid(mesh, "controlplane")
    os.kill(old, signal.SIGKILL)
    # traffic keeps flowing with the ztunnels' last configuration
    assert mesh.curl("http://kept:6060/during")["path"] == "/during"

    def back() -> bool:
        c = components(mesh)["controlplane"]
        return c["ready"] and f"(pid {old})" not in c["detail"]

    wait_for("the control plane to come back", back, timeout=30)
    names = {i["metadata"]["name"] for i in mesh.json("get", "services", "-n", "shop")["items"]}
    assert names == {"orders", "kept"}  # replayed from its journal
    mesh.ok("status", "--wait", "20")
    mesh.ok("delete", "-f", str(manifest))
    wait_services("node-1", {"orders"})


def test_children_die_with_up(mesh: Mesh) -> None:
    """Last: SIGKILL to `up` takes the control plane, the ztunnels and the pods with it."""
    pids = [component_pid(mesh, n) for n in ("controlplane", "ztunnel/node-1", "ztunnel/node-2")]
    pods = [p.pid for p in mesh.pod_states().values()]
    assert len(pods) == 2 and all(pods)
    os.kill(mesh.pid, signal.SIGKILL)
    for pid in [*pids, *pods]:
        assert pid is not None
        wait_for(f"pid {pid} to exit", functools.partial(pid_gone, pid), timeout=10)
    wait_for("the mesh's listeners to close", lambda: mesh_listeners() == [], timeout=10)


# -- the single-process model keeps hot reload ------------------------------------------------


def test_single_process_mode_reloads_the_folder(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config")
    mesh = Mesh(config, tmp_path / "state", tmp_path / "up.log", single_process=True).start()
    try:
        assert mesh.status()["mode"] == "single-process"
        assert {c["name"] for c in mesh.status()["components"]} >= {
            "controlplane",
            "ztunnel/node-1",
        }
        (config / "mesh.yaml").write_text(
            TWO_NODE_MESH + "---\n" + SERVICE.format(name="late", port=5050)
        )
        wait_services("node-1", {"orders", "late"})
        assert mesh.curl("http://late:5050/x")["path"] == "/x"
    finally:
        mesh.stop()
