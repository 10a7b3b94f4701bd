"""The waypoint's key checks in ``ambient up --single-process`` (the default process mode
is ``test_waypoint.py``): L7 authorization, the canary's header override, and a folder
edit changing routing at the waypoint while it runs (an L7-only change: nothing else in
the mesh changes, yet the waypoint must see it).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.harness import SHOP, Mesh, wait_for
from tests.e2e.test_waypoint import L7, edit, status_code, versions_seen

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("waypoint-single")
    config = root / "shop"
    shutil.copytree(SHOP, config)
    shutil.copy(L7, config / "l7.yaml")
    mesh = Mesh(config, root / "state", root / "up.log", single_process=True).start()
    try:
        mesh.ok("label", "namespace", "shop", "istio.io/use-waypoint=waypoint")
        yield mesh
    finally:
        mesh.stop()


def test_l7_policy_and_routing_in_one_process(mesh: Mesh) -> None:
    assert status_code(mesh, "deploy/web", "http://orders:8080/api/health") == "200"
    assert status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "403"
    assert versions_seen(mesh, 10, "x-canary: always") == Counter(v2=10)


def test_hot_reload_of_the_canary_weights_in_one_process(mesh: Mesh) -> None:
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
