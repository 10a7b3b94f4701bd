"""gRPC by name in local mode (no ``--netns``): an unmodified grpcio client uses the pod's
HTTP CONNECT port (``grpc_proxy``, set by the runtime), through the waypoint, to grpcio.

Namespace ``grpc`` is enrolled and uses the waypoint; ``echo`` runs two grpcio
servers, ``client`` only waits. ``ambient exec`` runs the client with the pod's
environment: grpc core reads ``grpc_proxy`` and sends ``CONNECT echo.grpc:50051``
to ``<client pod IP>:15081``, ztunnel resolves the mesh name and sends the
stream to the waypoint over HBONE with the client pod's identity.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
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

pytestmark = pytest.mark.slow

GRPCAPP = REPO / "tests" / "e2e" / "grpcapp"

# only the Sleep method is denied
NO_SLEEP = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-sleep, namespace: grpc}
spec:
  targetRefs:
  - {kind: Service, group: "", name: echo}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/grpcapp.Echo/Sleep"]}
"""
MESH = manifest(
    namespace("grpc", waypoint="waypoint"),
    waypoint("grpc"),
    NO_SLEEP,
    service("grpc", "echo", [{"name": "grpc", "port": 50051}]),
    deployment("grpc", "echo", python(GRPCAPP / "echo.py", "--port", "50051"), replicas=2,
               ports=[50051], privileged=True),
    pod("grpc", "client", python("-c", SLEEP), labels={}, privileged=True),
)  # fmt: skip


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("grpc-local")
    config = base / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    running = Mesh(config, base / "state", base / "up.log").start(wait=60)
    try:
        yield running
    finally:
        running.stop()


def grpc_call(mesh: Mesh, *args: str) -> dict[str, Any]:
    result = mesh.exec(
        "client", sys.executable, str(GRPCAPP / "client.py"), "echo.grpc:50051", *args,
        namespace="grpc",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_the_runtime_gives_pods_the_connect_proxy(mesh: Mesh) -> None:
    env = mesh.exec("client", "env", namespace="grpc").stdout.splitlines()
    values = dict(line.split("=", 1) for line in env if "=" in line)
    ip = values["POD_IP"]
    assert values["grpc_proxy"] == values["HTTPS_PROXY"] == f"http://{ip}:15081"
    assert values["ALL_PROXY"] == f"socks5h://{ip}:15080" and values["NO_PROXY"] == "localhost"


def test_a_grpc_call_by_name_through_the_connect_port_and_the_waypoint(mesh: Mesh) -> None:

    def call() -> dict[str, Any] | None:
        answer = grpc_call(mesh, "unary", "local")
        return answer if answer.get("code") == "OK" else None

    answer = wait_for("a gRPC call through the CONNECT port", call, timeout=30, every=0.5)
    assert answer["reply"].startswith("echo-") and answer["reply"].endswith("|local")
    assert grpc_call(mesh, "bidi", "20") == {"code": "OK", "messages": 20}
    denied = grpc_call(mesh, "sleep", "1")
    assert denied == {"code": "PERMISSION_DENIED", "details": "RBAC: access denied"}
    lines = [line for line in mesh.log().splitlines() if "/grpcapp.Echo/Unary" in line]
    assert any("protocol=HTTP/2" in line and "grpc_status=0" in line for line in lines), lines
