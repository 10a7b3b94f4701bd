from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.component.waypoint.harness import WaypointMesh, start_mesh
from tests.pki import make_ca


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[WaypointMesh]:
    async for m in start_mesh(make_ca(tmp_path)):
        yield m
