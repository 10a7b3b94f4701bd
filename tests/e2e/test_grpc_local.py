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

pytestmark = pytest.mark.slow

GRPCAPP = REPO / "tests" / "e2e" / "grpcapp"

MESH = """\
apiVersion: v1
kind: Namespace
metadata:
  name: grpc
  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: grpc
  labels: {{istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {{name: mesh, port: 15008, protocol: HBONE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-sleep, namespace: grpc}}
spec:
  targetRefs:
  - {{kind: Service, group: "", name: echo}}
  action: DENY
  rules:
  - to:
    - operation: {{paths: ["/grpcapp.Echo/Sleep"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: grpc}}
spec:
  selector: {{app: echo}}
  ports: [{{name: grpc, port: 50051}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: grpc}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata:
      labels: {{app: echo}}
    spec:
      containers:
      - name: echo
        command: ["{python}", "{grpcapp}/echo.py", --port, "50051"]
        securityContext: {{privileged: true}}  # the test runner's files: root's
        ports: [{{containerPort: 50051}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: grpc}}
spec:
  containers:
  - name: client
    command: ["{python}", -c, "import signal; signal.pause()"]
    securityContext: {{privileged: true}}  # the test runner's files: root's
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("grpc-local")
    config = base / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH.format(python=sys.executable, grpcapp=GRPCAPP))
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
