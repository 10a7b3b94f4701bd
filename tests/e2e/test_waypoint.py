"""The seed guide's sections 5-7 and its "Verify" list, end to end on examples/shop.

Real ``ambient`` CLI and processes; curl in the pods as the client. The mesh runs
``examples/shop`` plus ``examples/waypoint/l7.yaml`` (a waypoint, the 90/10 canary,
L7 authorization), with the namespace bound to the waypoint by ``ambient label``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.harness import REPO, SHOP, Mesh, scrape, select, wait_for

pytestmark = pytest.mark.slow

L7 = REPO / "examples" / "waypoint" / "l7.yaml"
PROGRAMMED = '{.status.conditions[?(@.type=="Programmed")].status}{"\\n"}'


def status_code(mesh: Mesh, source: str, url: str, *headers: str) -> str:
    args = [arg for h in headers for arg in ("-H", h)]
    result = mesh.exec(source, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args, url)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("waypoint")
    config = root / "shop"
    shutil.copytree(SHOP, config)
    shutil.copy(L7, config / "l7.yaml")
    mesh = Mesh(config, root / "state", root / "up.log", single_process=True).start()
    try:
        mesh.ok("label", "namespace", "shop", "istio.io/use-waypoint=waypoint")
        yield mesh
    finally:
        mesh.stop()


def test_workloads_are_hbone_and_services_use_the_waypoint(mesh: Mesh) -> None:
    workloads = mesh.workloads()
    assert workloads and all(w["protocol"] == "HBONE" for w in workloads.values())
    services = {s["name"]: s for s in mesh.json("zc", "services", "-n", "shop")}
    assert services["orders"]["waypoint"] == "shop/waypoint.shop.svc.cluster.local"
    assert services["waypoint"]["waypoint"] is None
    table = mesh.ok("zc", "services", "-n", "shop")
    assert any(
        line.split()[1:2] == ["orders"] and "waypoint" in line for line in table.splitlines()
    )


def test_gateway_is_programmed(mesh: Mesh) -> None:
    out = mesh.ok(
        "get",
        "gateways.gateway.networking.k8s.io",
        "waypoint",
        "-n",
        "shop",
        "-o",
        f"jsonpath={PROGRAMMED}",
    )
    assert out == "True\n"
    assert "True" in mesh.ok("waypoint", "list", "-n", "shop")


def test_l7_authorization_allows_web_and_refuses_others(mesh: Mesh) -> None:
    assert status_code(mesh, "deploy/web", "http://orders:8080/api/health") == "200"
    assert status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "403"
    # web may only GET/POST under /api/
    assert status_code(mesh, "deploy/web", "http://orders:8080/admin") == "403"
    body = mesh.exec("probe", "curl", "-s", "http://orders.shop:8080/api/health").stdout
    assert body == "RBAC: access denied"


def test_canary_split_and_header_override(mesh: Mesh) -> None:
    answers, failures = mesh.curl_many("http://orders:8080/api/health", 1000)
    assert not failures
    versions = Counter(a["version"] for a in answers)
    assert versions["v1"] + versions["v2"] == 1000
    assert 70 <= versions["v2"] <= 130, versions  # 10% +- 3%
    pinned, failures = mesh.curl_many_with_header(
        "http://orders:8080/api/health", 20, "x-canary: always"
    )
    assert not failures and {a["version"] for a in pinned} == {"v2"}


def test_waypoint_metrics_split_by_destination_version(mesh: Mesh) -> None:
    waypoint = next(w for w in mesh.workloads().values() if w["name"].startswith("waypoint-"))
    url = f"http://{waypoint['workloadIps'][0]}:15020/metrics"

    def v2_requests() -> float:
        samples = select(
            scrape(url),
            "istio_requests_total",
            reporter="waypoint",
            destination_version="v2",
            response_code="200",
        )
        return sum(s.value for s in samples)

    wait_for("v2 requests in the waypoint's metrics", lambda: v2_requests() > 0)
    assert select(scrape(url), "istio_requests_total", response_code="403")


def test_removing_the_binding_goes_direct(mesh: Mesh) -> None:
    mesh.ok("label", "namespace", "shop", "istio.io/use-waypoint-")
    try:
        wait_for(
            "probe reaching orders directly once the waypoint binding is gone",
            lambda: status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "200",
        )
    finally:
        mesh.ok("label", "namespace", "shop", "istio.io/use-waypoint=waypoint")
    wait_for(
        "the waypoint enforcing again",
        lambda: status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "403",
    )
