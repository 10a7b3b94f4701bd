"""Writing pods' statuses through ``/status``, as the kubelet's status manager does.

A pod marked dirty has its status computed afresh by the caller's function and
written with a strategic merge patch (which keeps the scheduler's ``PodScheduled``
condition and any condition of another writer), only when it differs from the last
one written. Writes are serial and coalesced: a pod marked ten times while a write
is in flight is written once more, with its latest status. A failed write is tried
again with back-off (0.2 s to 10 s); a pod that no longer exists (404) is dropped,
as is one whose uid changed (a precondition on the uid: the status of a pod is
never written onto its namesake).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import POD

__all__ = ["StatusWriter"]

log = logging.getLogger("ambient.kubelet")

BACKOFF = (0.2, 10.0)
PATCH = "application/strategic-merge-patch+json"

Compute = Callable[[tuple[str, str]], tuple[str, dict[str, Any]] | None]
"""For a pod key: its uid and the status to write, or None if there is nothing to write."""


class StatusWriter:
    """Coalesced, retried status writes (see the module docstring)."""

    def __init__(self, client: KubeClient, compute: Compute) -> None:
        self.client = client
        self.compute = compute
        self._dirty: dict[tuple[str, str], None] = {}
        self._wake = asyncio.Event()
        self._written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def mark(self, key: tuple[str, str]) -> None:
        """Write this pod's status soon."""
        self._dirty[key] = None
        self._idle.clear()
        self._wake.set()

    def forget(self, key: tuple[str, str]) -> None:
        """The pod is gone: nothing more to write for it."""
        self._dirty.pop(key, None)
        self._written.pop(key, None)

    async def flush(self, key: tuple[str, str], timeout: float = 10.0) -> None:
        """Write this pod's status now (with its latest values) and wait for it."""
        self._dirty.pop(key, None)
        try:
            async with asyncio.timeout(timeout):
                await self._write(key)
        except (KubeError, TimeoutError) as err:
            log.warning("status of pod %s/%s not written: %s", *key, err)

    async def idle(self) -> None:
        """Until nothing is left to write (tests and shutdown)."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = BACKOFF[0]
        while True:
            if not self._dirty:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key = next(iter(self._dirty))
            del self._dirty[key]
            try:
                await self._write(key)
                delay = BACKOFF[0]
            except KubeError as err:
                log.warning("status of pod %s/%s not written (retrying): %s", *key, err)
                self._dirty.setdefault(key, None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])

    async def _write(self, key: tuple[str, str]) -> None:
        wanted = self.compute(key)
        if wanted is None:
            return
        uid, status = wanted
        if self._written.get(key) == wanted:
            return
        body = {"metadata": {"uid": uid}, "status": status}
        try:
            await self.client.patch(POD.path(key[0], key[1], "status"), body, PATCH)
        except KubeError as err:
            if err.code in (404, 409):  # gone, or a namesake with another uid
                self._written.pop(key, None)
                return
            raise
        self.writes += 1
        self._written[key] = wanted
