"""``ambient up --netns`` with a waypoint: plaintext from outside the mesh is hair-pinned through it.

The mesh (tests/netns/waypoint): ``orders`` (node-2) in ``shop``, whose Services use the
waypoint ``waypoint`` (a pod on node-1, in its own network namespace), which denies
``/admin`` by an L7 AuthorizationPolicy; ``client`` (node-1) in ``outside``, not in the
mesh, calls orders with an unmodified curl. Only the waypoint can answer 403 with
``RBAC: access denied`` (ztunnel works at L4 and never sees a path), so that answer
proves the plaintext went through it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambient.netns import mesh_prefix
from tests.e2e.harness import Mesh, wait_for
from tests.netns.test_capture import STRICT

pytestmark = pytest.mark.slow

MESH_DIR = Path(__file__).parent / "waypoint"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("netns-waypoint")
    running = Mesh(MESH_DIR, base / "state", base / "up.log", up_args=("--netns",)).start(wait=60)
    try:
        yield running
    finally:
        running.stop()
        running.run("down")


def call(mesh: Mesh, path: str) -> tuple[str, str]:
    """(status code, body) of an out-of-mesh GET on orders by its Service name; code 000: failed."""
    result = mesh.exec(
        "client",
        "curl",
        "-sS",
        "-m",
        "10",
        "-w",
        "\n%{http_code}",
        f"http://orders.shop:8080{path}",
        namespace="outside",
    )
    body, _, code = result.stdout.rpartition("\n")
    return code.strip() or "000", body


def test_waypoint_pod_has_its_own_namespace(mesh: Mesh) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    prefix = f"{mesh_prefix(mesh.state_dir)}-pod.shop.waypoint-"
    assert any(line.startswith(prefix) for line in listed.splitlines()), listed


def test_out_of_mesh_plaintext_goes_through_the_waypoint(mesh: Mesh) -> None:
    wait_for("the waypoint to serve", lambda: call(mesh, "/api/items")[0] == "200", timeout=30)
    code, body = call(mesh, "/admin")
    assert (code, body) == ("403", "RBAC: access denied")
    code, body = call(mesh, "/api/items")
    assert code == "200" and '"app": "orders"' in body and '"path": "/api/items"' in body
    assert "hair-pinned through the waypoint" in mesh.log()


def test_a_hair_pinned_caller_has_no_mesh_identity(mesh: Mesh) -> None:
    """The destination's ztunnel tunnels the outside caller's plaintext with orders' own
    certificate; the waypoint must not take the caller for orders (namespace shop)."""
    wait_for("the waypoint to serve", lambda: call(mesh, "/api/items")[0] == "200", timeout=30)
    assert call(mesh, "/internal/stats") == ("403", "RBAC: access denied")


def test_strict_refuses_plaintext_even_with_a_waypoint(mesh: Mesh, tmp_path: Path) -> None:
    policy = tmp_path / "strict.yaml"
    policy.write_text(STRICT)
    mesh.ok("apply", "-f", str(policy))
    try:
        wait_for(
            "STRICT to refuse plaintext",
            lambda: call(mesh, "/api/items")[0] == "000",
            timeout=10,
            every=0.2,
        )
    finally:
        mesh.ok("delete", "-f", str(policy))
    wait_for("PERMISSIVE again", lambda: call(mesh, "/api/items")[0] == "200", timeout=10)
