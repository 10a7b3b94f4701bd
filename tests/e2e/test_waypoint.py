"""The seed guide's sections 5-7 and its "Verify" list, end to end on examples/shop.

Real ``ambient`` CLI and processes; curl in the pods as the client. The mesh runs
``examples/shop`` plus ``examples/waypoint/l7.yaml`` (a waypoint, the 90/10 canary,
L7 authorization), with the namespace bound to the waypoint by ``ambient label``,
in the default mode: the control plane and each node's ztunnel are processes, and
the waypoint (hosted by node-1's ztunnel process) gets its L7 configuration over
xDS. Edits of the folder and ``ambient apply`` reach it while it runs.
``test_waypoint_single.py`` runs the key checks in ``--single-process``.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, SHOP, Mesh, scrape, select, wait_for

pytestmark = pytest.mark.slow

L7 = REPO / "examples" / "waypoint" / "l7.yaml"
PROGRAMMED = '{.status.conditions[?(@.type=="Programmed")].status}{"\\n"}'


def versions_seen(mesh: Mesh, count: int, *headers: str) -> Counter[str]:
    """The ``version`` of ``count`` answers of orders to web (each a new connection)."""
    if headers:
        (header,) = headers
        answers, failures = mesh.curl_many_with_header(
            "http://orders:8080/api/health", count, header
        )
    else:
        answers, failures = mesh.curl_many("http://orders:8080/api/health", count)
    assert not failures, failures
    return Counter(a["version"] for a in answers)


def edit(path: Path, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` in ``path`` (as a user's editor would); returns the old text."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))
    return text


def status_code(mesh: Mesh, source: str, url: str, *headers: str) -> str:
    args = [arg for h in headers for arg in ("-H", h)]
    result = mesh.exec(source, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args, url)
    return result.stdout.strip()


def shop_with_waypoint(root: Path, single_process: bool = False) -> Iterator[Mesh]:
    """examples/shop + l7.yaml running in ``root``, the namespace bound to the waypoint."""
    config = root / "shop"
    shutil.copytree(SHOP, config)
    shutil.copy(L7, config / "l7.yaml")
    mesh = Mesh(config, root / "state", root / "up.log", single_process=single_process).start()
    try:
        mesh.ok("label", "namespace", "shop", "istio.io/use-waypoint=waypoint")
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from shop_with_waypoint(tmp_path_factory.mktemp("waypoint"))


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
    # The node proxy that runs it shows it and the L7 objects it holds.
    hosted = mesh.json("zc", "waypoints", "-n", "shop")
    assert [(w["name"].startswith("waypoint-"), w["ready"], w["l7"]["synced"]) for w in hosted] == [
        (True, True, True)
    ]
    resources = set(hosted[0]["l7"]["resources"])
    assert {
        "DestinationRule/shop/orders",
        "VirtualService/shop/orders",
        "AuthorizationPolicy/shop/orders-l7",
    } <= resources
    table = mesh.ok("zc", "waypoints")
    assert "L7 OBJECTS" in table and "node-" in table


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


NO_REQUEST_COUNT = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: no-request-count, namespace: shop}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT}
      disabled: true
"""


def test_telemetry_reaches_the_waypoint(mesh: Mesh, tmp_path: Path) -> None:
    """A Telemetry applied while the mesh runs reaches the waypoint (over xDS, in a ztunnel
    process): requests go on being timed but no longer counted; deleting it restores both."""
    waypoint = next(w for w in mesh.workloads().values() if w["name"].startswith("waypoint-"))
    url = f"http://{waypoint['workloadIps'][0]}:15020/metrics"

    def totals() -> tuple[float, float]:
        samples = scrape(url)
        return (
            sum(s.value for s in select(samples, "istio_requests_total", reporter="waypoint")),
            sum(
                s.value
                for s in select(
                    samples, "istio_request_duration_milliseconds_count", reporter="waypoint"
                )
            ),
        )

    def one_call_counted() -> bool | None:
        before = totals()
        assert status_code(mesh, "deploy/web", "http://orders:8080/api/health") == "200"
        after = totals()
        assert after[1] > before[1]  # timed either way
        return after[0] > before[0]

    telemetry = tmp_path / "telemetry.yaml"
    telemetry.write_text(NO_REQUEST_COUNT)
    mesh.ok("apply", "-f", str(telemetry))
    try:
        wait_for("requests no longer counted", lambda: not one_call_counted(), timeout=20)
        assert not one_call_counted()
    finally:
        mesh.ok("delete", "-f", str(telemetry))
    wait_for("requests counted again", one_call_counted, timeout=20)


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


def components(mesh: Mesh) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in mesh.status()["components"]}


def test_runs_as_processes(mesh: Mesh) -> None:
    found = components(mesh)
    pids = {
        name: int(m.group(1))
        for name in ("controlplane", "ztunnel/node-1", "ztunnel/node-2")
        if (m := re.search(r"\(pid (\d+)\)", found.get(name, "")))
    }
    assert len(pids) == 3 and mesh.pid not in pids.values(), found
    # node-1's ztunnel process hosts the waypoint
    logs = sorted((mesh.state_dir / "logs").glob("ambient-system_*node-1*.log"))
    assert logs, sorted((mesh.state_dir / "logs").iterdir())
    hosted = [line for line in logs[0].read_text().splitlines() if "waypoint shop/" in line]
    assert any("serving on" in line for line in hosted), hosted


def test_hot_reload_of_the_canary_weights_reaches_the_waypoint(mesh: Mesh) -> None:
    check_canary_hot_reload(mesh)


def check_canary_hot_reload(mesh: Mesh) -> None:
    """Editing the VirtualService's weights in the folder moves all traffic to v2, and back."""
    l7 = mesh.config_dir / "l7.yaml"
    original = edit(l7, "weight: 90", "weight: 0")
    edit(l7, "weight: 10", "weight: 100")
    try:
        wait_for(
            "every request routed to v2 after editing the VirtualService's weights",
            lambda: versions_seen(mesh, 10) == Counter(v2=10),
            timeout=20,
            every=0.2,
        )
    finally:
        l7.write_text(original)
    wait_for(
        "v1 answering again once the weights are back",
        lambda: versions_seen(mesh, 10)["v1"] > 0,
        timeout=20,
        every=0.2,
    )


ALLOW_PROBE = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-l7, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: orders}]
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/probe]}}]
    to: [{operation: {methods: [GET], paths: ["/api/*"]}}]
"""


def test_apply_of_an_l7_policy_reaches_the_waypoint(mesh: Mesh, tmp_path: Path) -> None:
    policy = tmp_path / "allow-probe.yaml"
    policy.write_text(ALLOW_PROBE)
    mesh.ok("apply", "-f", str(policy))
    try:
        wait_for(
            "probe allowed and web refused once the edited policy is applied",
            lambda: (
                status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "200"
                and status_code(mesh, "deploy/web", "http://orders:8080/api/health") == "403"
            ),
            timeout=20,
            every=0.2,
        )
    finally:
        mesh.ok("apply", "-f", str(mesh.config_dir / "l7.yaml"))
    wait_for(
        "the folder's policy back in force",
        lambda: status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "403",
        timeout=20,
        every=0.2,
    )
    assert status_code(mesh, "deploy/web", "http://orders:8080/api/health") == "200"
