"""Fixtures for interop tests: the Go peer binary, a throw-away PKI, loopback targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import peers
from .make_test_certs import InteropPKI, generate


@pytest.fixture(scope="session")
def gopeer() -> Path:
    """Path of the built Go peer (cached by source hash; skips if ``go`` is missing)."""
    return peers.build_gopeer()


@pytest.fixture(scope="session")
def interop_pki(tmp_path_factory: pytest.TempPathFactory) -> InteropPKI:
    return generate(tmp_path_factory.mktemp("interop-pki"))


@pytest.fixture
def echo() -> Iterator[peers.TcpTarget]:
    """Loopback echo server that half-closes after the client's EOF."""
    with peers.start_tcp_target(peers.echo_handler) as target:
        yield target


@pytest.fixture
def banner() -> Iterator[peers.TcpTarget]:
    """Loopback server that sends ``BANNER`` and closes first."""
    with peers.start_tcp_target(peers.banner_handler(peers.BANNER)) as target:
        yield target
