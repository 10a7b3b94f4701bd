"""TLS contexts: one per certificate for every listener of the process, none kept for a
certificate that is gone."""

from __future__ import annotations

import gc
from pathlib import Path

from ambient.hbone.server import HboneServer
from ambient.hbone.tls import SERVER_CONTEXTS, ContextCache
from tests.pki import issue, make_ca


async def _never(stream: object) -> None:  # pragma: no cover - no stream is opened
    raise AssertionError


def test_listeners_of_one_identity_share_one_context(tmp_path: Path) -> None:
    """Two pods of one service account (one certificate object) listening on their own
    addresses: one server context (~23.5 KB), not one per listener."""
    cert = issue(make_ca(tmp_path), "shop", "orders")
    first = HboneServer(lambda: cert, _never)
    second = HboneServer(lambda: cert, _never)
    assert first._contexts.get(cert) is second._contexts.get(cert)
    assert first._contexts is SERVER_CONTEXTS


def test_an_entry_goes_with_its_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cache = ContextCache(server_side=True)
    kept = issue(ca, "shop", "orders")
    renewed = issue(ca, "shop", "web")
    cache.get(kept)
    cache.get(renewed)
    assert len(cache) == 2
    del renewed
    gc.collect()
    assert len(cache) == 1
    assert cache.get(kept) is cache.get(kept)


def test_the_bound_still_holds(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cache = ContextCache(server_side=False, max_entries=2)
    certs = [issue(ca, "shop", f"w{i}") for i in range(3)]
    for cert in certs:
        cache.get(cert)
    assert len(cache) == 2
