"""``ambient dashboard`` on examples/shop with its waypoint, looked at in headless Chromium.

While web calls orders (the 90/10 canary of examples/waypoint/l7.yaml), the page drawn by
Chromium shows web → waypoint → orders-v1/orders-v2 with the split, mutual TLS on every
hop, and per workload its identity, policies and routes; it redraws as traffic goes on.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.chromium import Page, chromium_binary, headless_page
from tests.e2e.harness import Mesh, ambient_binary, clean_env, wait_for
from tests.e2e.test_waypoint import shop_with_waypoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a mesh, traffic and a browser

_URL = re.compile(r"at (http://\S+) ")
WINDOW_SECONDS = 120  # long: a slow machine still gathers 100 requests in it
INTO_WAYPOINT = '#graph g.edge[data-source="shop/web"][data-target="shop/waypoint"]'
EDGES = """[...document.querySelectorAll('#graph g.edge')].map(g => ({
  source: g.dataset.source, target: g.dataset.target, rps: Number(g.dataset.rps),
  share: Number(g.dataset.share), errors: Number(g.dataset.errorRate), mtls: g.dataset.mtls,
  waypoint: g.dataset.waypoint, p99: g.dataset.p99Ms, label: g.querySelector('text').textContent,
  cls: g.getAttribute('class')}))"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    chromium_binary()  # skip before starting a mesh
    yield from shop_with_waypoint(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="module")
def dashboard(mesh: Mesh) -> Iterator[str]:
    """``ambient dashboard`` on a free port, refreshing every second; yields its URL."""
    log_path = mesh.state_dir.parent / "dashboard.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                ambient_binary(),
                "dashboard",
                "--state-dir",
                str(mesh.state_dir),
                "--port",
                "0",
                "--refresh",
                "1s",
                "--window",
                f"{WINDOW_SECONDS}s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:
        found = wait_for(
            "the dashboard's URL",
            lambda: _URL.search(log_path.read_text()) or (process.poll() is not None and "exited"),
            timeout=60,
            every=0.2,
        )
        assert isinstance(found, re.Match), log_path.read_text()
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def traffic(mesh: Mesh) -> Iterator[None]:
    """web calls orders until the module ends (bounded: at most 100 rounds of 20)."""
    stop = threading.Event()

    def loop() -> None:
        for _ in range(100):
            if stop.is_set():
                return
            mesh.curl_many("http://orders:8080/api/health", 20)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    yield
    stop.set()
    worker.join(timeout=120)


@pytest.fixture(scope="module")
def page(dashboard: str, traffic: None) -> Iterator[Page]:
    with headless_page(dashboard) as opened:
        yield opened


def edges(page: Page) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["source"], e["target"]): e for e in page.evaluate(EDGES)}


def test_the_page_shows_web_to_waypoint_to_orders_with_the_canary_split(page: Page) -> None:
    hops = [
        "shop/web>shop/waypoint",
        "shop/waypoint>shop/orders-v1",
        "shop/waypoint>shop/orders-v2",
    ]
    page.wait_for(
        "web -> waypoint -> orders-v1 and orders-v2",
        f"(() => {{ const seen = new Set([...document.querySelectorAll('#graph g.edge')]"
        f".map(g => g.dataset.source + '>' + g.dataset.target)); "
        f"return {json.dumps(hops)}.every(h => seen.has(h)); }})()",
        timeout=120,
    )
    # The split is random per request: judge it over at least 100 requests in the window.
    page.wait_for(
        "100 requests from web in the window",
        f"Number(document.querySelector({INTO_WAYPOINT!r}).dataset.rps) * {WINDOW_SECONDS} >= 100",
        timeout=300,
    )
    found = edges(page)
    into = found[("shop/web", "shop/waypoint")]
    v1 = found[("shop/waypoint", "shop/orders-v1")]
    v2 = found[("shop/waypoint", "shop/orders-v2")]
    # Every hop is HBONE: mutual TLS, and the waypoint's hops say so.
    for edge in (into, v1, v2):
        assert edge["mtls"] == "mutual_tls", edge
        assert edge["waypoint"] == "true", edge
        assert edge["rps"] > 0, edge
        assert edge["errors"] == 0, edge
        assert edge["label"].startswith("mTLS · "), edge
        assert "mtls" in edge["cls"].split(), edge
    # The waypoint sends web's requests on 90/10 (random per request: a loose band).
    assert into["share"] == pytest.approx(1.0)
    assert v1["share"] + v2["share"] == pytest.approx(1.0)
    assert 0.75 <= v1["share"] <= 0.98, (v1, v2)
    assert v1["p99"] and float(v1["p99"]) > 0
    # The table under the graph says the same.
    rows = page.evaluate(
        "[...document.querySelectorAll('#edges tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )
    by_hop = {(r[0], r[1]): r for r in rows}
    assert by_hop[("shop/web", "shop/waypoint")][9] == "mTLS"
    assert by_hop[("shop/waypoint", "shop/orders-v1")][2] == "HTTP"
    # Nodes: the waypoint is drawn as one.
    kinds = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#graph g.node')].map(g => [g.dataset.id, g.dataset.kind]))"
    )
    assert kinds["shop/waypoint"] == "waypoint"
    assert kinds["shop/web"] == kinds["shop/orders-v1"] == "workload"


def click(page: Page, node: str) -> dict[str, Any]:
    """Click ``node`` in the graph; the details panel as {term: text}."""
    page.evaluate(
        f"document.querySelector('#graph g.node[data-id=\"{node}\"]').dispatchEvent(new MouseEvent('click', {{bubbles: true}}))"
    )
    page.wait_for(
        f"{node}'s details", f"document.getElementById('details').dataset.id === '{node}'"
    )
    details: dict[str, Any] = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#details dt')].map(dt => [dt.textContent, dt.nextElementSibling.textContent]))"
    )
    return details


def test_a_workload_shows_its_identity_policies_and_routes(page: Page) -> None:
    page.wait_for(
        "the nodes", "!!document.querySelector('#graph g.node[data-id=\"shop/orders-v1\"]')"
    )
    orders = click(page, "shop/orders-v1")
    assert orders["Identity"] == "spiffe://cluster.local/ns/shop/sa/orders"
    assert "AuthorizationPolicy shop/orders-l7 ALLOW (by waypoint)" in orders["Policies"]
    assert "VirtualService shop/orders" in orders["Routes"]
    assert "orders v1 90%, orders v2 10%" in orders["Routes"]
    assert orders["Waypoint"] == "shop/waypoint.shop.svc.cluster.local"
    assert orders["Protocol"] == "HBONE (mutual TLS)"
    web = click(page, "shop/web")
    assert web["Identity"] == "spiffe://cluster.local/ns/shop/sa/web"
    assert web["Policies"] == "none"


def test_the_orders_service_is_a_box_around_its_two_versions(page: Page) -> None:
    selector = '#graph g.service[data-service="orders.shop.svc.cluster.local"]'
    page.wait_for("the orders service", f"!!document.querySelector({selector!r})")
    members = page.evaluate(f"document.querySelector({selector!r}).dataset.members")
    assert members.split() == ["shop/orders-v1", "shop/orders-v2"]
    label = page.evaluate(f"document.querySelector({selector!r}).textContent")
    assert label == "orders (service, via waypoint)"
    page.evaluate(
        f"document.querySelector({selector!r}).dispatchEvent(new MouseEvent('click', {{bubbles: true}}))"
    )
    page.wait_for(
        "the service's details",
        "document.getElementById('details').dataset.id === 'service:orders.shop.svc.cluster.local'",
    )
    details = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#details dt')].map(dt => [dt.textContent, dt.nextElementSibling.textContent]))"
    )
    assert details["Waypoint"] == "shop/waypoint.shop.svc.cluster.local"
    assert details["Workloads"] == "shop/orders-v1shop/orders-v2"  # a list: one item each


def test_the_page_updates_live(page: Page) -> None:
    before = int(page.wait_for("a first draw", "document.body.dataset.refreshes"))
    after = page.wait_for(
        "a redraw",
        f"Number(document.body.dataset.refreshes) > {before} && document.body.dataset.refreshes",
    )
    assert int(after) > before


def test_a_request_for_another_host_name_is_refused(dashboard: str) -> None:
    """A page elsewhere whose DNS name points at 127.0.0.1 cannot read the graph."""
    request = urllib.request.Request(dashboard + "api/graph", headers={"Host": "evil.example:80"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 421
    with opener.open(dashboard + "api/graph", timeout=10) as answer:
        graph = json.loads(answer.read())
    assert {"nodes", "edges", "mesh"} <= graph.keys()
    with opener.open(dashboard, timeout=10) as answer:
        policy = answer.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy


def test_without_a_mesh_it_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [ambient_binary(), "dashboard", "--state-dir", str(tmp_path / "none"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr
