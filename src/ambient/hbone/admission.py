"""Bounding connections that have not proven who they are yet (TLS handshake under way).

Anyone who can reach port 15008 can open TCP connections and never finish a
TLS handshake; each holds a file descriptor until the handshake times out. So
the connections accepted and not yet authenticated, across every listener
that shares one :class:`PendingHandshakes` (a ztunnel shares one among its
pods' listeners), are bounded: when a new one arrives and the bound is
reached, the *oldest* pending one is dropped. Under a flood of idle
connections the oldest are the attacker's, while a legitimate client
completes its handshake within milliseconds of being accepted, so it is never
the oldest for long (refusing the newest instead would refuse exactly the
legitimate client arriving during the flood). The kernel's accept backlog
queues whoever comes while the accept loop is busy.

The default bound is a quarter of the process's file-descriptor limit (at
most 1,024), so unauthenticated peers can never take the descriptors that
established tunnels and their application connections need.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from dataclasses import dataclass, field

log = logging.getLogger("ambient.hbone")

MAX_PENDING = 1024
_WARN_EVERY = 10.0  # seconds between warnings about dropped connections


@dataclass(eq=False, slots=True)
class Pending:
    """One accepted connection in its handshake; ``owned`` once its transport owns the socket."""

    sock: socket.socket
    task: asyncio.Task[None] | None = None
    owned: bool = False


@dataclass
class PendingHandshakes:
    """The unauthenticated connections of one or more listeners, at most ``limit``."""

    limit: int | None = None  # None: a quarter of RLIMIT_NOFILE, at most MAX_PENDING
    dropped: int = 0  # connections dropped to make room, in total
    _pending: dict[Pending, None] = field(default_factory=dict)  # oldest first
    _warned_at: float = float("-inf")
    _dropped_since_warning: int = 0

    def __len__(self) -> int:
        return len(self._pending)

    def admit(self, entry: Pending) -> None:
        """Count ``entry`` in, dropping the oldest pending connections to make room."""
        limit = self.limit if self.limit is not None else default_limit()
        while len(self._pending) >= max(limit, 1):
            oldest = next(iter(self._pending))
            self.finished(oldest)
            self._drop(oldest)
        self._pending[entry] = None

    def finished(self, entry: Pending) -> None:
        """The handshake ended, one way or another."""
        self._pending.pop(entry, None)

    def _drop(self, entry: Pending) -> None:
        if entry.task is not None:
            entry.task.cancel()  # asyncio closes a transport cancelled in its handshake
        if not entry.owned:  # not yet handed to a transport: ours to close
            entry.sock.close()
        self.dropped += 1
        self._dropped_since_warning += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            log.warning(
                "HBONE: dropped %d connection(s) still in their TLS handshake: more than %d "
                "unauthenticated connections at once (a flood of idle connections?)",
                self._dropped_since_warning,
                len(self._pending) + 1,
            )
            self._warned_at = now
            self._dropped_since_warning = 0


def default_limit() -> int:
    """A quarter of the soft RLIMIT_NOFILE, between 16 and :data:`MAX_PENDING`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_PENDING
    return max(16, min(MAX_PENDING, soft // 4))
