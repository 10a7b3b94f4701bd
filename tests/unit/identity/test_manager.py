"""CertificateManager: caching, single flight, half-life renewal, back-off, clean shutdown."""

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ambient.identity import (
    CertificateAuthority,
    CertificateError,
    CertificateManager,
    SpiffeId,
    WorkloadCertificate,
)
from ambient.identity.manager import Issuer
from tests.pki import make_ca

IDENT = SpiffeId.workload("shop", "cart")
OTHER = SpiffeId.workload("shop", "checkout")


class FakeIssuer:
    """Signs with a CA; counts calls; can fail or block on demand."""

    def __init__(self, ca: CertificateAuthority, ttl: timedelta = timedelta(hours=1)) -> None:
        self.ca = ca
        self.ttl = ttl
        self.calls: list[tuple[SpiffeId, float]] = []
        self.failures = 0  # fail this many upcoming calls
        self.gate: asyncio.Event | None = None
        self.on_issue: Callable[[bytes], None] | None = None
        self.called = asyncio.Event()

    async def __call__(self, identity: SpiffeId, csr_pem: bytes) -> tuple[bytes, bytes]:
        self.calls.append((identity, asyncio.get_running_loop().time()))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("CA unavailable")
        chain = self.ca.sign_csr(csr_pem, identity, self.ttl)
        if self.on_issue is not None:
            self.on_issue(chain)
        return chain, self.ca.roots_pem()

    async def wait_for_calls(self, count: int) -> None:
        while len(self.calls) < count:
            self.called.clear()
            await self.called.wait()


def _no_other_tasks() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


def _collector() -> tuple[
    list[WorkloadCertificate], asyncio.Event, Callable[[WorkloadCertificate], None]
]:
    seen: list[WorkloadCertificate] = []
    changed = asyncio.Event()

    def on_cert(cert: WorkloadCertificate) -> None:
        seen.append(cert)
        changed.set()

    return seen, changed, on_cert


async def test_fetches_once_and_caches(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    async with CertificateManager(issuer) as manager:
        first = await manager.get(IDENT)
        assert first.identity == IDENT
        assert await manager.get(IDENT) is first
        other = await manager.get(OTHER)
        assert other.identity == OTHER
        assert [ident for ident, _ in issuer.calls] == [IDENT, OTHER]
        assert {c.identity for c in manager.snapshot()} == {IDENT, OTHER}


async def test_concurrent_gets_share_one_fetch(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    issuer.gate = asyncio.Event()
    async with CertificateManager(issuer) as manager:
        waiters = [asyncio.create_task(manager.get(IDENT)) for _ in range(20)]
        await asyncio.sleep(0)
        issuer.gate.set()
        certs = await asyncio.gather(*waiters)
        assert len(issuer.calls) == 1
        assert all(cert is certs[0] for cert in certs)


async def test_cancelled_get_does_not_cancel_the_fetch(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    issuer.gate = asyncio.Event()
    async with CertificateManager(issuer) as manager:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(manager.get(IDENT), 0.01)
        issuer.gate.set()
        assert (await manager.get(IDENT)).identity == IDENT
        assert len(issuer.calls) == 1


async def test_renews_at_half_life(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path), ttl=timedelta(seconds=2))
    seen, changed, on_cert = _collector()
    async with CertificateManager(issuer) as manager:
        manager.subscribe(on_cert)
        first = await manager.get(IDENT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        changed.clear()
        await asyncio.wait_for(changed.wait(), 5)
        elapsed = loop.time() - started
        assert 0.9 <= elapsed <= 2.0, elapsed  # ~1 s: half of the 2 s lifetime
        second = seen[-1]
        assert seen[0] is first and second is not first
        assert second.not_after > first.not_after
        assert await manager.get(IDENT) is second


async def test_backoff_then_recovery(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    issuer.failures = 4
    seen, changed, on_cert = _collector()
    async with CertificateManager(issuer, min_backoff=0.02, max_backoff=0.08) as manager:
        manager.subscribe(on_cert)
        with pytest.raises(CertificateError, match=r"shop/sa/cart: last fetch failed: CA unava"):
            await manager.get(IDENT)
        # while backing off, get() fails fast instead of calling the CA again
        with pytest.raises(CertificateError, match="CA unavailable"):
            await manager.get(IDENT)
        await asyncio.wait_for(changed.wait(), 5)
        assert await manager.get(IDENT) is seen[0]
    times = [t for _, t in issuer.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(issuer.calls) == 5
    for gap, expected in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=True):
        assert expected * 0.9 <= gap < expected + 0.5, (gaps, expected)


async def test_serves_old_cert_until_expiry_while_retrying(tmp_path: Path) -> None:
    now = [datetime.now(UTC)]
    issuer = FakeIssuer(make_ca(tmp_path))

    def jump_close_to_expiry(chain: bytes) -> None:
        # Make the manager believe the new cert has 0.2 s left: it renews in 0.1 s.
        from ambient.identity import load_pem_chain

        now[0] = load_pem_chain(chain)[0].not_valid_after_utc - timedelta(seconds=0.2)

    issuer.on_issue = jump_close_to_expiry
    seen, changed, on_cert = _collector()
    async with CertificateManager(issuer, clock=lambda: now[0], min_backoff=0.02) as manager:
        manager.subscribe(on_cert)
        first = await manager.get(IDENT)
        issuer.on_issue = None
        issuer.failures = 1000
        await asyncio.wait_for(issuer.wait_for_calls(3), 5)  # renewals are failing
        assert await manager.get(IDENT) is first  # still valid: keep serving it
        now[0] = first.not_after
        with pytest.raises(CertificateError, match=r"no valid certificate for .*CA unavailable"):
            await manager.get(IDENT)  # expired: fail closed
        changed.clear()
        issuer.failures = 0
        now[0] = datetime.now(UTC)
        await asyncio.wait_for(changed.wait(), 5)  # recovers on the next retry
        assert await manager.get(IDENT) is seen[-1] is not first


async def test_expired_cert_triggers_immediate_renewal(tmp_path: Path) -> None:
    now = [datetime.now(UTC)]
    issuer = FakeIssuer(make_ca(tmp_path))
    async with CertificateManager(issuer, clock=lambda: now[0]) as manager:
        first = await manager.get(IDENT)
        now[0] = first.not_after + timedelta(seconds=1)  # e.g. after a suspend
        issuer.ttl = timedelta(hours=3)
        second = await asyncio.wait_for(manager.get(IDENT), 5)
        assert second is not first and len(issuer.calls) == 2


async def test_rejects_wrong_certificate_from_issuer(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)

    async def liar(identity: SpiffeId, csr_pem: bytes) -> tuple[bytes, bytes]:
        return ca.issue(OTHER).chain_pem, ca.roots_pem()

    async with CertificateManager(liar) as manager:
        with pytest.raises(CertificateError, match="does not match the private key"):
            await manager.get(IDENT)
        assert manager.snapshot() == []


async def test_fetch_timeout(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    issuer.gate = asyncio.Event()  # never set
    async with CertificateManager(issuer, fetch_timeout=0.05) as manager:
        with pytest.raises(CertificateError, match=r"timed out after 0.05s"):
            await manager.get(IDENT)


async def test_subscriber_errors_do_not_stop_renewal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    seen, _, on_cert = _collector()

    def broken(cert: WorkloadCertificate) -> None:
        raise RuntimeError("boom")

    async with CertificateManager(issuer) as manager:
        manager.subscribe(broken)
        unsubscribe = manager.subscribe(on_cert)
        await manager.get(IDENT)
        unsubscribe()
        await manager.get(OTHER)
    assert [c.identity for c in seen] == [IDENT]
    assert "certificate subscriber" in caplog.text


async def test_forget_stops_renewal(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path), ttl=timedelta(seconds=2))
    manager = CertificateManager(issuer)
    await manager.get(IDENT)
    manager.forget(IDENT)
    manager.forget(IDENT)  # idempotent
    assert manager.snapshot() == []
    await asyncio.sleep(0)
    assert _no_other_tasks()
    await manager.close()


async def test_close_cancels_everything(tmp_path: Path) -> None:
    issuer = FakeIssuer(make_ca(tmp_path))
    issuer.gate = asyncio.Event()
    manager = CertificateManager(issuer)
    pending = asyncio.create_task(manager.get(IDENT))
    await asyncio.sleep(0)
    await manager.close()
    with pytest.raises(CertificateError, match="stopped fetching the certificate"):
        await pending
    assert _no_other_tasks()
    with pytest.raises(CertificateError, match="closed"):
        await manager.get(IDENT)
    await manager.close()  # idempotent


def test_rejects_bad_backoff() -> None:
    async def issuer(identity: SpiffeId, csr_pem: bytes) -> tuple[bytes, bytes]:
        raise AssertionError

    checked: Issuer = issuer
    with pytest.raises(ValueError, match="min_backoff <= max_backoff"):
        CertificateManager(checked, min_backoff=2, max_backoff=1)
    with pytest.raises(ValueError, match="min_backoff"):
        CertificateManager(checked, min_backoff=0)
