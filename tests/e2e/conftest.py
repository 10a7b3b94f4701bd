"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import acquire_mesh_lock, release_mesh_lock, wait_mesh_addresses_free


@pytest.fixture
def no_other_mesh() -> Iterator[None]:
    """For a test that compares the machine's mesh listeners before and after: no mesh
    (another test's, another run's) may start meanwhile."""
    acquire_mesh_lock()
    try:
        wait_mesh_addresses_free()
        yield
    finally:
        release_mesh_lock()
