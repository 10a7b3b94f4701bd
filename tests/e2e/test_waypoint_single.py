"""The waypoint's key checks in ``ambient up --single-process`` (the default process mode
is ``test_waypoint.py``): L7 authorization, the canary's header override, and a folder
edit changing routing at the waypoint while it runs (an L7-only change: nothing else in
the mesh changes, yet the waypoint must see it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Mesh
from tests.e2e.test_waypoint import (
    check_canary_hot_reload,
    shop_with_waypoint,
    status_code,
    versions_seen,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from shop_with_waypoint(tmp_path_factory.mktemp("waypoint-single"), single_process=True)


def test_l7_policy_and_routing_in_one_process(mesh: Mesh) -> None:
    assert status_code(mesh, "deploy/web", "http://orders:8080/api/health") == "200"
    assert status_code(mesh, "probe", "http://orders.shop:8080/api/health") == "403"
    assert versions_seen(mesh, 10, "x-canary: always") == Counter(v2=10)


def test_hot_reload_of_the_canary_weights_in_one_process(mesh: Mesh) -> None:
    check_canary_hot_reload(mesh)
