"""JWKS from ``jwksUri``: fetched over HTTP(S), cached, refreshed; failures fail closed.

Istio's istiod fetches each ``jwksUri`` and refreshes it every 20 minutes
(``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``); when the fetch fails it hands Envoy a
key set that verifies nothing, so every token of that issuer is rejected. The
waypoint does the same itself, per URI (shared by every rule naming it):

- the first request that needs the keys waits for the fetch (one fetch in
  flight, however many requests wait), bounded by the rule's ``timeout``;
- after ``refresh_interval`` (20 min) the keys are refreshed in the background
  while the cached ones keep serving; a failed refresh keeps the cached keys;
- a token whose ``kid`` is not in the set triggers a fetch (key rotation), at
  most once per ``min_refetch_interval`` (10 s) so bogus kids cannot hammer the
  issuer;
- with nothing cached, a failure is an error for every token of the issuer
  (401) and is logged with the URI and the reason; the next attempt waits
  ``retry_interval`` (5 s), in between requests fail at once.

The body must be a JSON JWK Set (``{"keys": [...]}``), at most 1 MiB, served
with status 200. Redirects are not followed. HTTPS uses the system trust store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import h11
from joserfc.jwk import KeySet

from ambient.config.requestauthn import parse_jwks

__all__ = ["JwksCache", "JwksError", "JwksSource", "fetch_jwks"]

log = logging.getLogger("ambient.waypoint.policy.jwks")

MAX_BODY = 1024 * 1024
REFRESH_INTERVAL = 20 * 60.0
MIN_REFETCH_INTERVAL = 10.0
RETRY_INTERVAL = 5.0

Fetcher = Callable[[str, float], Awaitable[KeySet]]


class JwksError(Exception):
    """The keys of a ``jwksUri`` are not available."""


async def fetch_jwks(
    uri: str, timeout: float, *, ssl_context: ssl.SSLContext | None = None
) -> KeySet:
    """GET ``uri`` and parse the JWK Set; ``JwksError`` naming what went wrong."""
    parts = urlsplit(uri)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = (ssl_context or ssl.create_default_context()) if secure else None
    try:
        async with asyncio.timeout(timeout):
            status, body = await _get(host, port, target, context, parts.netloc)
    except TimeoutError:
        raise JwksError(f"no answer within {timeout:g}s") from None
    except (OSError, h11.ProtocolError, ssl.SSLError) as exc:
        raise JwksError(f"{type(exc).__name__}: {exc}") from None
    if status != 200:
        raise JwksError(f"HTTP status {status}")
    try:
        return parse_jwks(body.decode("utf-8", "replace"))
    except ValueError as exc:
        raise JwksError(str(exc)) from None


async def _get(
    host: str, port: int, target: str, context: ssl.SSLContext | None, authority: str
) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if context else None
    )
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", authority),
                ("Accept", "application/json"),
                ("User-Agent", "ambient-waypoint"),
                ("Connection", "close"),
            ],
        )
        writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        status = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise OSError(f"JWKS larger than {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                if status == 0:
                    raise OSError("connection closed before a response")
                return status, bytes(body)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class JwksSource:
    """The cached key set of one ``jwksUri`` (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        timeout: float = 5.0,
        fetcher: Fetcher = fetch_jwks,
        refresh_interval: float = REFRESH_INTERVAL,
        min_refetch_interval: float = MIN_REFETCH_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = uri
        self.timeout = timeout
        self._fetcher = fetcher
        self._refresh_interval = refresh_interval
        self._min_refetch = min_refetch_interval
        self._retry = retry_interval
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0  # last success
        self._attempted_at: float | None = None  # last attempt, success or not
        self._error = "not fetched yet"
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0  # attempts, for tests and diagnostics

    async def keys(self) -> KeySet:
        """The current keys, fetching them first if there are none; ``JwksError`` if none."""
        now = self._clock()
        if self._keys is None:
            if self._attempted_at is None or now - self._attempted_at >= self._retry:
                await self._fetch()
        elif now - self._fetched_at >= self._refresh_interval:
            self._start_fetch()  # background refresh, keep serving the cached keys
        if self._keys is None:
            raise JwksError(f"fetching JWKS from {self.uri} failed: {self._error}")
        return self._keys

    async def refetch(self) -> KeySet | None:
        """Fetch again for an unknown ``kid``, unless the last attempt was too recent."""
        if (
            self._attempted_at is not None
            and self._clock() - self._attempted_at < self._min_refetch
        ):
            return self._keys
        await self._fetch()
        return self._keys

    def _start_fetch(self) -> asyncio.Task[None]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._run_fetch(), name=f"jwks {self.uri}")
        return self._inflight

    async def _fetch(self) -> None:
        await asyncio.shield(self._start_fetch())

    async def _run_fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            keys = await self._fetcher(self.uri, self.timeout)
        except JwksError as exc:
            self._error = str(exc)
            kept = "; keeping the cached keys" if self._keys is not None else ""
            log.warning("fetching JWKS from %s failed: %s%s", self.uri, exc, kept)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("fetched JWKS from %s: %d keys", self.uri, len(keys.keys))

    async def aclose(self) -> None:
        """Cancel a fetch in flight."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class JwksCache:
    """One ``JwksSource`` per URI, shared by every rule that names it."""

    def __init__(
        self,
        *,
        fetcher: Fetcher = fetch_jwks,
        refresh_interval: float = REFRESH_INTERVAL,
        min_refetch_interval: float = MIN_REFETCH_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self._intervals = (refresh_interval, min_refetch_interval, retry_interval)
        self._clock = clock
        self._sources: dict[str, JwksSource] = {}

    def source(self, uri: str, timeout: float) -> JwksSource:
        """The source of ``uri`` (the first caller's ``timeout`` applies)."""
        found = self._sources.get(uri)
        if found is None:
            refresh, refetch, retry = self._intervals
            found = JwksSource(
                uri,
                timeout=timeout,
                fetcher=self._fetcher,
                refresh_interval=refresh,
                min_refetch_interval=refetch,
                retry_interval=retry,
                clock=self._clock,
            )
            self._sources[uri] = found
        return found

    async def aclose(self) -> None:
        for source in self._sources.values():
            await source.aclose()
