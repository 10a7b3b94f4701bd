"""Handshake deadlines by the second: one event-loop timer per second in use, not one per
connection.

A client of a pod's SOCKS5 or HTTP CONNECT port has ``HANDSHAKE_TIMEOUT`` seconds to
name its destination. A timer per connection (``loop.call_later``, then ``cancel``
once the request is in, a few hundred microseconds later) is a timer handle made,
armed, stopped and freed for every connection. Here a connection joins the set of
the whole second its deadline falls in (rounded up) and leaves it when its request
is complete or it is closed; one timer per such second aborts whatever is still in
the set. A deadline is therefore kept to within one second late, never early.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

__all__ = ["Deadlines", "Expiring"]


class Expiring(Protocol):
    """What a deadline ends: a handshake still under way."""

    def expired(self) -> None:
        """The deadline passed (abort the connection)."""
        ...


class Deadlines:
    """Deadlines ``seconds`` after now, grouped per whole second (see the module docstring)."""

    __slots__ = ("_buckets", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._buckets: dict[int, set[Expiring]] = {}

    def add(self, item: Expiring, loop: asyncio.AbstractEventLoop) -> int:
        """Expire ``item`` ``seconds`` from now (up to a second later); the key to
        :meth:`discard` it with."""
        key = math.ceil(loop.time() + self.seconds)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            loop.call_at(key, self._expire, key)
        bucket.add(item)
        return key

    def discard(self, key: int, item: Expiring) -> None:
        """``item`` no longer expires (its handshake is done, or it is closed)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(item)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def _expire(self, key: int) -> None:
        for item in self._buckets.pop(key, ()):
            item.expired()
