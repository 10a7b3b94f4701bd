"""The HBONE connection pool, with ztunnel's rules.

A connection is shared only by streams with the same key: (source identity,
expected destination identities, destination address, source IP). A
connection carries at most ``max_streams`` live streams (100, as ztunnel);
one more opens a new connection. A connection with no streams for
``idle_timeout`` (5 minutes) is closed. Connections that received GOAWAY or
died are never handed out again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass

from ambient.hbone.client import Dialer, connect
from ambient.hbone.connection import HboneTransport
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.protocol import HboneSettings
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId

log = logging.getLogger("ambient.hbone")


@dataclass(frozen=True, slots=True)
class PoolKey:
    """What a pooled connection may be shared by."""

    source: SpiffeId
    destination_identities: frozenset[SpiffeId]
    destination: SocketAddress
    source_ip: str | None = None


class ConnectionPool:
    """Opens HBONE streams over shared connections."""

    def __init__(
        self,
        *,
        settings: HboneSettings | None = None,
        max_streams: int = 100,
        idle_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        dialer: Dialer | None = None,
    ) -> None:
        self.dialer = dialer
        self.settings = settings or HboneSettings()
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._conns: dict[PoolKey, list[HboneTransport]] = {}
        self._reserved: dict[HboneTransport, int] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        self._idle_timers: dict[HboneTransport, asyncio.TimerHandle] = {}
        self._closed = False

    async def open_stream(
        self,
        *,
        source: WorkloadCertificate,
        destination: SocketAddress,
        expected: Collection[SpiffeId],
        request: ConnectRequest,
        source_ip: str | None = None,
    ) -> HboneStream:
        """A CONNECT stream to ``destination`` answered 200; raises ``HboneError`` otherwise."""
        key = PoolKey(source.identity, frozenset(expected), destination, source_ip)
        conn = await self._checkout(key, source)
        try:
            stream, response = conn.start_stream(request)
        finally:
            self._release(conn)  # from here on the stream itself counts as the connection's load
        return await conn.finish_stream(stream, response)

    def connections(self) -> list[tuple[PoolKey, HboneTransport]]:
        """Live pooled connections, for the admin endpoint and tests."""
        return [(key, conn) for key, conns in self._conns.items() for conn in conns]

    async def close(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()
        for _, conn in self.connections():
            conn.close("pool closed")
        self._conns.clear()

    # -- internals -----------------------------------------------------------------

    def _load(self, conn: HboneTransport) -> int:
        return len(conn.streams) + self._reserved.get(conn, 0)

    def _usable(self, conn: HboneTransport) -> bool:
        limit = min(self.max_streams, conn.conn.max_outbound_streams)
        return conn.accepting_streams and self._load(conn) < limit

    async def _checkout(self, key: PoolKey, source: WorkloadCertificate) -> HboneTransport:
        conn = self._find(key)
        if conn is None:
            lock = self._locks.setdefault(key, asyncio.Lock())
            try:
                async with lock:
                    conn = self._find(key)  # another task may have dialled meanwhile
                    if conn is None:
                        conn = await self._dial(key, source)
            finally:
                # A destination that could not be reached leaves nothing behind (pods come
                # and go with new addresses: their keys must not pile up).
                if key not in self._conns and not lock.locked() and self._locks.get(key) is lock:
                    del self._locks[key]
        self._reserved[conn] = self._reserved.get(conn, 0) + 1
        timer = self._idle_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        return conn

    def _find(self, key: PoolKey) -> HboneTransport | None:
        for conn in self._conns.get(key, ()):
            if self._usable(conn):
                return conn
        return None

    async def _dial(self, key: PoolKey, source: WorkloadCertificate) -> HboneTransport:
        local = (key.source_ip, 0) if key.source_ip else None
        conn = await connect(
            key.destination,
            source,
            key.destination_identities,
            settings=self.settings,
            timeout=self.connect_timeout,
            local_address=local,
            dialer=self.dialer,
        )
        conn.on_idle = self._on_idle
        self._conns.setdefault(key, []).append(conn)
        conn.on_closed = lambda closed: self._forget(key, closed)
        log.debug("HBONE pool: new connection %s", conn)
        return conn

    def _release(self, conn: HboneTransport) -> None:
        left = self._reserved.get(conn, 0) - 1
        if left > 0:
            self._reserved[conn] = left
        else:
            self._reserved.pop(conn, None)
            if not conn.streams:
                self._on_idle(conn)

    def _on_idle(self, conn: HboneTransport) -> None:
        if self._closed or conn.closed or self._reserved.get(conn) or conn in self._idle_timers:
            return
        loop = asyncio.get_running_loop()
        self._idle_timers[conn] = loop.call_later(self.idle_timeout, self._expire, conn)

    def _expire(self, conn: HboneTransport) -> None:
        self._idle_timers.pop(conn, None)
        if not conn.streams and not self._reserved.get(conn):
            conn.close("idle")

    def _forget(self, key: PoolKey, conn: HboneTransport) -> None:
        conns = self._conns.get(key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[key]
                self._locks.pop(key, None)
        timer = self._idle_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        self._reserved.pop(conn, None)
