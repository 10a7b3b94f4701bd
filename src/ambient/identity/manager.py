"""Keeps workload certificates fresh: fetch on first use, renew at half-life, back off on failure."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType

from ambient.identity.certs import (
    CertificateError,
    WorkloadCertificate,
    generate_key_and_csr,
    utc_now,
)
from ambient.identity.spiffe import SpiffeId

__all__ = ["CertificateManager", "Issuer"]

_log = logging.getLogger(__name__)

Issuer = Callable[[SpiffeId, bytes], Awaitable[tuple[bytes, bytes]]]
"""``issuer(identity, csr_pem) -> (chain_pem, roots_pem)``: a local CA or a CA client."""

MIN_BACKOFF = 0.5  # seconds; Istio ztunnel's retry interval on failed fetches ...
MAX_BACKOFF = 150.0  # ... doubling up to this
FETCH_TIMEOUT = 60.0


class _State(enum.Enum):
    FETCHING = "fetching"
    WAITING = "waiting to refresh"
    BACKOFF = "backing off after a failure"
    STOPPED = "stopped"


@dataclass(eq=False)
class _Entry:
    next_attempt: asyncio.Future[None]
    task: asyncio.Task[None] | None = None
    cert: WorkloadCertificate | None = None
    error: Exception | None = None
    state: _State = _State.FETCHING
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class CertificateManager:
    """One certificate per SPIFFE id, fetched on first :meth:`get` and renewed in the background.

    Renewal happens at :meth:`WorkloadCertificate.refresh_at` (half-life), or half-way
    through the remaining lifetime if that is later, so a backdated ``not_before``
    cannot cause a renewal storm. Failed fetches are retried with exponential
    back-off (``min_backoff`` doubling up to ``max_backoff`` seconds) and the
    previous certificate is served until it expires, never after.

    :meth:`get` fails fast with the last error while a fetch is backing off; it
    waits while the first fetch (or a renewal of an expired certificate) is in flight.
    """

    def __init__(
        self,
        issuer: Issuer,
        *,
        clock: Callable[[], datetime] = utc_now,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        fetch_timeout: float = FETCH_TIMEOUT,
    ) -> None:
        if not 0 < min_backoff <= max_backoff:
            raise ValueError(
                f"need 0 < min_backoff <= max_backoff, got {min_backoff} and {max_backoff}"
            )
        if fetch_timeout <= 0:
            raise ValueError(f"fetch_timeout must be positive, got {fetch_timeout}")
        self._issuer = issuer
        self._clock = clock
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._fetch_timeout = fetch_timeout
        self._entries: dict[SpiffeId, _Entry] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._subscribers: list[Callable[[WorkloadCertificate], None]] = []
        self._closed = False

    async def get(self, identity: SpiffeId) -> WorkloadCertificate:
        """A currently valid certificate for ``identity``; raises CertificateError if none."""
        if self._closed:
            raise CertificateError("certificate manager is closed")
        entry = self._entries.get(identity)
        if entry is None:
            entry = self._start(identity)
        cert = entry.cert
        if cert is not None and not cert.is_expired(self._clock()):
            return cert
        if entry.state is _State.WAITING:
            entry.wake.set()  # e.g. the wall clock jumped past expiry: renew now
        if entry.state is not _State.BACKOFF:
            await asyncio.shield(entry.next_attempt)
        cert = entry.cert
        if cert is not None and not cert.is_expired(self._clock()):
            return cert
        if entry.state is _State.STOPPED:
            raise CertificateError(f"stopped fetching the certificate for {identity}")
        reason = f"last fetch failed: {entry.error}" if entry.error else "it expired"
        raise CertificateError(f"no valid certificate for {identity}: {reason}") from entry.error

    def forget(self, identity: SpiffeId) -> None:
        """Drop ``identity``'s certificate and stop renewing it."""
        entry = self._entries.pop(identity, None)
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.task.cancel()
            self._stopping.add(entry.task)
            entry.task.add_done_callback(self._stopping.discard)

    def subscribe(self, callback: Callable[[WorkloadCertificate], None]) -> Callable[[], None]:
        """Call ``callback`` with every new certificate; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def snapshot(self) -> list[WorkloadCertificate]:
        """The certificates currently held (possibly expired ones awaiting renewal)."""
        return [e.cert for e in self._entries.values() if e.cert is not None]

    async def close(self) -> None:
        """Stop all renewals and wait for the background tasks to finish."""
        self._closed = True
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        tasks.extend(self._stopping)
        self._entries.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> CertificateManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- background work -------------------------------------------------------

    def _start(self, identity: SpiffeId) -> _Entry:
        entry = _Entry(next_attempt=asyncio.get_running_loop().create_future())
        self._entries[identity] = entry
        entry.task = asyncio.create_task(
            self._run(identity, entry), name=f"certificate renewal for {identity}"
        )
        # A done callback, not ``finally``: it runs even if the task is cancelled unstarted.
        entry.task.add_done_callback(lambda _: self._stopped(entry))
        return entry

    @staticmethod
    def _stopped(entry: _Entry) -> None:
        entry.state = _State.STOPPED
        if not entry.next_attempt.done():
            entry.next_attempt.set_result(None)

    async def _run(self, identity: SpiffeId, entry: _Entry) -> None:
        backoff = self._min_backoff
        while True:
            entry.state = _State.FETCHING
            try:
                cert = await self._fetch(identity)
            except Exception as err:
                entry.error = err
                entry.state = _State.BACKOFF
                _log.warning(
                    "fetching the certificate for %s failed, retrying in %.1fs: %s",
                    identity,
                    backoff,
                    err,
                )
                self._attempt_done(entry)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._min_backoff
            entry.cert, entry.error = cert, None
            entry.state = _State.WAITING
            entry.wake.clear()
            self._attempt_done(entry)
            _log.info("new certificate for %s, valid until %s", identity, cert.not_after)
            self._notify(cert)
            await self._wait_for_refresh(entry, cert)

    async def _fetch(self, identity: SpiffeId) -> WorkloadCertificate:
        key_pem, csr_pem = generate_key_and_csr(identity)
        try:
            async with asyncio.timeout(self._fetch_timeout):
                chain_pem, roots_pem = await self._issuer(identity, csr_pem)
        except TimeoutError:
            raise CertificateError(
                f"certificate request for {identity} timed out after {self._fetch_timeout}s"
            ) from None
        return WorkloadCertificate.from_pem(
            identity, key_pem, chain_pem, roots_pem, now=self._clock()
        )

    def _attempt_done(self, entry: _Entry) -> None:
        done = entry.next_attempt
        entry.next_attempt = asyncio.get_running_loop().create_future()
        done.set_result(None)

    async def _wait_for_refresh(self, entry: _Entry, cert: WorkloadCertificate) -> None:
        now = self._clock()
        at = max(cert.refresh_at(), now + (cert.not_after - now) / 2)
        delay = max((at - now) / timedelta(seconds=1), self._min_backoff)
        try:
            async with asyncio.timeout(delay):
                await entry.wake.wait()
        except TimeoutError:
            pass

    def _notify(self, cert: WorkloadCertificate) -> None:
        for callback in list(self._subscribers):
            try:
                callback(cert)
            except Exception:
                _log.exception("certificate subscriber %r failed for %s", callback, cert.identity)
