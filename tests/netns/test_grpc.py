"""``ambient up --netns`` with a waypoint in front of gRPC, HTTP/2 and WebSocket apps (root only).

Namespace ``grpc`` is enrolled and uses the waypoint ``waypoint`` (node-1). The
apps run on node-2: ``echo`` (grpcio ``grpcapp.Echo``, two versions; Service port
named ``grpc``), ``h2app`` (Go net/http speaking h2c; Service ``appProtocol:
kubernetes.io/h2c``) and ``ws`` (a ``websockets`` echo; port undeclared). The
``client`` pod (node-1) runs unmodified clients -- grpcio, curl, h2load, the
``websockets`` client -- with no proxy settings: capture sends their traffic
through ztunnel to the waypoint, which speaks HTTP/2 to the gRPC and h2c backends.
An AuthorizationPolicy denies the ``Sleep`` method only; a GRPCRoute sends calls
with ``x-version: v2`` to ``echo-v2`` only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import REPO, Mesh, wait_for
from tests.e2e.manifests import (
    SLEEP,
    deployment,
    manifest,
    namespace,
    pod,
    python,
    service,
    waypoint,
)
from tests.e2e.test_grpc_local import NO_SLEEP
from tests.e2e.test_processes import component_pid
from tests.interop.peers import build_go_program

pytestmark = pytest.mark.slow

GRPCAPP = REPO / "tests" / "e2e" / "grpcapp"
H2APP = REPO / "tests" / "e2e" / "h2app"
NS = "grpc"

# calls with x-version: v2 go to echo-v2 only
ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-versions, namespace: grpc}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 50051}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: echo-v2, port: 50051}]
  - backendRefs: [{name: echo, port: 50051}]
"""
GRPC = [{"name": "grpc", "port": 50051}]


def mesh_yaml(h2app: Path) -> str:
    """The mesh of the module docstring: the waypoint and the client on node-1, the apps on
    node-2 (``h2app``: the built Go program)."""
    echo = [
        deployment(NS, f"echo-{v}", python(GRPCAPP / "echo.py", "--port", "50051"),
                   labels={"app": "echo", "version": v}, container="echo", node="node-2",
                   ports=[50051], privileged=True)
        for v in ("v1", "v2")
    ]  # fmt: skip
    return manifest(
        namespace(NS, waypoint="waypoint"),
        waypoint(NS, nodes="node-1"),
        NO_SLEEP,
        service(NS, "echo", GRPC),
        service(NS, "echo-v2", GRPC, selector={"app": "echo", "version": "v2"}),
        *echo,
        ROUTE,
        service(NS, "h2app", [{"name": "web", "port": 8080, "appProtocol": "kubernetes.io/h2c"}]),
        pod(NS, "h2app", [h2app, "-port", "8080"], node="node-2", ports=[8080], privileged=True),
        service(NS, "ws", [{"name": "chat", "port": 8765}]),
        pod(NS, "ws", python(GRPCAPP / "wsecho.py", "serve", "--port", "8765"), node="node-2",
            ports=[8765], privileged=True),
        pod(NS, "client", python("-c", SLEEP), labels={}, node="node-1", privileged=True),
    )  # fmt: skip


def build_h2app() -> Path:
    """tests/e2e/h2app, built once per source (cached with the interop peers' builds)."""
    return build_go_program(H2APP, "h2app")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("netns-grpc")
    config = base / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(mesh_yaml(build_h2app()))
    running = Mesh(config, base / "state", base / "up.log", up_args=("--netns",)).start(wait=90)
    try:
        wait_for("every pod to be ready", lambda: all_ready(running), timeout=60)
        yield running
    finally:
        running.stop()
        running.run("down")


def all_ready(mesh: Mesh) -> bool:
    states = mesh.pod_states()
    return bool(states) and all(s.ready for s in states.values())


def grpc_call(mesh: Mesh, *args: str, timeout: float = 120) -> dict[str, Any]:
    result = mesh.exec(
        "client", sys.executable, str(GRPCAPP / "client.py"), "echo.grpc:50051", *args,
        namespace=NS, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def wait_serving(mesh: Mesh) -> None:
    wait_for(
        "the waypoint to serve gRPC",
        lambda: grpc_call(mesh, "unary", "ping").get("code") == "OK",
        timeout=30,
        every=0.5,
    )


def test_every_call_shape_through_the_waypoint(mesh: Mesh) -> None:
    wait_serving(mesh)
    unary = grpc_call(mesh, "unary", "hello", "--header", "x-client=e2e")
    assert unary["code"] == "OK" and unary["reply"].split("|")[1] == "hello", unary
    assert unary["reply"].startswith("echo-v") and unary["trailing"]["x-trailer"] == "done"
    assert grpc_call(mesh, "server-stream", "100", "1000") == {
        "code": "OK", "messages": 100, "bytes": 100_000,
    }  # fmt: skip
    assert grpc_call(mesh, "client-stream", "100", "1000")["bytes"] == 100_000
    assert grpc_call(mesh, "bidi", "50") == {"code": "OK", "messages": 50}
    lines = [line for line in mesh.log().splitlines() if "/grpcapp.Echo/Bidi" in line]
    assert any("protocol=HTTP/2" in line and "grpc_status=0" in line for line in lines), lines


def test_a_header_matched_grpcroute(mesh: Mesh) -> None:
    wait_serving(mesh)
    versions = {
        grpc_call(mesh, "unary", f"m{i}", "--header", "x-version=v2")["reply"].split("-")[1]
        for i in range(6)
    }
    assert versions == {"v2"}
    unrouted = {grpc_call(mesh, "unary", f"m{i}")["reply"].split("-")[1] for i in range(10)}
    assert unrouted == {"v1", "v2"}  # the Service's endpoints, round robin


def test_a_policy_denies_one_method(mesh: Mesh) -> None:
    wait_serving(mesh)
    assert grpc_call(mesh, "sleep", "10") == {
        "code": "PERMISSION_DENIED", "details": "RBAC: access denied",
    }  # fmt: skip
    assert grpc_call(mesh, "unary", "still allowed")["code"] == "OK"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


DOWNLOAD_TIMEOUT = 75  # s: about 2 s here, 10 s on a loaded machine; pytest's timeout is 120


def test_100mb_stream_with_bounded_waypoint_memory(mesh: Mesh) -> None:
    """The waypoint runs in node-1's ztunnel process: its RSS while 100 MB stream through."""
    wait_serving(mesh)
    pid = component_pid(mesh, "ztunnel/node-1")
    baseline = peak = rss_mb(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:  # well within pytest's timeout, so that a stall is reported with the mesh's state
        result = grpc_call(mesh, "download", str(100 * 1024 * 1024), timeout=DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"100 MB not through in {DOWNLOAD_TIMEOUT}s\n{mesh.stall_report()}")
    finally:
        done.set()
        sampler.join()
    assert result["code"] == "OK" and result["bytes"] == 100 * 1024 * 1024, result
    grew = peak - baseline
    print(f"100 MB in {result['seconds']:.1f}s; node-1 proxy RSS {baseline:.0f} -> {peak:.0f} MB")
    assert grew < 60, f"the waypoint's process grew {grew:.0f} MB for a 100 MB stream"


def test_curl_h2c_and_h2load_against_an_http2_backend(mesh: Mesh) -> None:
    if shutil.which("h2load") is None:
        pytest.skip("needs h2load (Debian package nghttp2-client)")
    url = "http://h2app.grpc:8080/hello"

    def curl() -> str:
        result = mesh.exec("client", "curl", "-sS", "-m", "10", "--http2-prior-knowledge", url,
                           namespace=NS)  # fmt: skip
        return result.stdout

    body = wait_for("h2app through the waypoint", curl, timeout=30, every=0.5)
    assert re.fullmatch(r"h2app HTTP/2\.0 /hello\n", body), body  # h2c to the backend too
    # HTTP/1.1 from the client: the port declares h2c, so HTTP/2 upstream all the same
    http1 = mesh.exec("client", "curl", "-sS", "-m", "10", "--http1.1", url, namespace=NS)
    assert http1.stdout == "h2app HTTP/2.0 /hello\n", http1.stdout + http1.stderr
    load = mesh.exec(
        "client", "h2load", "-n", "2000", "-c", "4", "-m", "10", url, namespace=NS, timeout=120
    )
    assert "2000 succeeded, 0 failed, 0 errored" in load.stdout, load.stdout + load.stderr
    assert re.search(r"status codes: 2000 2xx", load.stdout), load.stdout


def test_websocket_echo(mesh: Mesh) -> None:
    def call() -> dict[str, Any] | None:
        result = mesh.exec(
            "client", sys.executable, str(GRPCAPP / "wsecho.py"), "call",
            "ws://ws.grpc:8765/chat", "17", namespace=NS,
        )  # fmt: skip
        answer: dict[str, Any] = json.loads(result.stdout or "{}")
        return answer if answer.get("ok") else None

    answer = wait_for("a WebSocket echo through the waypoint", call, timeout=30, every=0.5)
    assert answer["greeting"] == "hello from ws /chat" and answer["echoed"] == 17
    assert any('path="/chat"' in line and "status=101" in line for line in mesh.log().splitlines())
