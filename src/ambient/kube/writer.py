"""Writes to the API server, one at a time, off the controller's path.

Status and owned objects are server-side applied (field manager
``ambient-controlplane``, ``force``: the controller owns what it writes). A write is
keyed by its object: a newer write for the same object replaces one still waiting
(only the latest desired state matters), so a burst of changes costs one write per
object. A failed write is retried with back-off (0.5 s doubling to 30 s) unless a
newer one replaced it; a 404 (the object is gone) drops it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

from ambient.kube.api import KubeClient, KubeError, NotFound

__all__ = ["Writer"]

log = logging.getLogger("ambient.kube")

_FIRST, _MAX = 0.5, 30.0


class Writer:
    """A queue of server-side applies, coalesced per key (see the module docstring)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.writes = 0  # successful applies
        self.failures = 0
        self._queue: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def apply(self, key: str, path: str, body: Mapping[str, Any]) -> None:
        """Apply ``body`` at ``path`` soon (replacing a waiting write with the same key)."""
        self._queue[key] = (path, body)
        self._idle.clear()
        self._wake.set()

    def pending(self, key: str) -> Mapping[str, Any] | None:
        """The body waiting to be written for ``key``, if any."""
        waiting = self._queue.get(key)
        return waiting[1] if waiting else None

    async def idle(self) -> None:
        """Until nothing waits to be written (tests, shutdown)."""
        await self._idle.wait()

    async def run(self) -> None:
        delay = _FIRST
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key = next(iter(self._queue))
            path, body = self._queue.pop(key)
            try:
                await self.client.apply(path, body)
            except NotFound:
                log.debug("%s: gone before it was written", key)
                continue
            except KubeError as err:
                self.failures += 1
                log.warning("writing %s failed (retrying): %s", key, err)
                self._queue.setdefault(key, (path, body))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _MAX)
                continue
            self.writes += 1
            delay = _FIRST
