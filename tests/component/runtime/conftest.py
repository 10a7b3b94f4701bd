from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ambient.runtime import Supervisor
from tests.component.runtime.harness import Events


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def supervisor(tmp_path: Path, events: Events) -> AsyncIterator[Supervisor]:
    sup = Supervisor(
        tmp_path / "state",
        backoff_initial=0.05,
        backoff_max=0.2,
        backoff_reset=60.0,
        grace_period=2.0,
        on_event=events,
    )
    yield sup
    await sup.close()
