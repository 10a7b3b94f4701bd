"""List-then-watch of one kind, as client-go's reflector does it.

- A paginated list gives every object and a resourceVersion; the store is replaced
  with it (objects it no longer has are deleted). Then a watch from that
  resourceVersion with ``allowWatchBookmarks``: every event moves the
  resourceVersion on, bookmarks move it on without a change, so a re-watch after
  the server ends a watch (``timeoutSeconds``, 5 to 10 minutes, randomized as
  client-go does) or after a lost connection resumes exactly where it stopped.
- 410 Gone (the resourceVersion is older than what the API server keeps: after its
  restart, or an etcd compaction) relists at once: nothing changed meanwhile is
  lost, since the list shows the current state and the store's replace turns what
  disappeared into deletions.
- Any other failure (connection refused or lost, 5xx, 429) retries with exponential
  back-off with jitter, 0.5 s doubling to 30 s, reset by a healthy watch.
- 401/403 (the control plane's RBAC does not allow it) is logged once per distinct
  message naming the kind and the verb, kept in ``state.error`` (``ambient
  status`` shows it) and retried with the same back-off: fixing the RBAC heals it.
- ``state.error`` is the current state, as a Kubernetes condition is, not a
  history: it is cleared (and "watching again" logged) as soon as the kind is
  listed or a watch is accepted again, whichever comes first. A watch that broke
  (a lost connection, a 5xx) resumes from its resourceVersion without a list, and
  may then see no event for minutes: its error must not outlive it.
- 404 on the list (the API server does not serve the kind: its CRD is not
  installed) counts as synced with no objects, logged once, and is retried every
  minute, so installing the CRD later is picked up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ambient.kube.api import Forbidden, Gone, KubeClient, KubeError, NotFound
from ambient.kube.kinds import KindInfo

__all__ = ["Reflector", "WatchSink", "WatchState"]

log = logging.getLogger("ambient.kube")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
ABSENT_RETRY = 60.0
WATCH_SECONDS = (300, 600)


class WatchSink(Protocol):
    """Where a reflector delivers: the whole list, then one event at a time."""

    def replace(self, info: KindInfo, items: list[dict[str, Any]]) -> None: ...

    def event(self, info: KindInfo, kind: str, obj: dict[str, Any]) -> None: ...


@dataclass
class WatchState:
    """What ``ambient status`` shows of one kind's watch."""

    kind: str
    synced: bool = False
    served: bool = True
    resource_version: str = ""
    lists: int = 0
    events: int = 0
    error: str | None = None
    since: float = 0.0  # time.time() of the last successful list

    def to_dict(self, objects: int) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "synced": self.synced,
            "served": self.served,
            "objects": objects,
            "resourceVersion": self.resource_version,
            "lists": self.lists,
            "events": self.events,
            "error": self.error,
        }


class Reflector:
    """Keeps ``sink`` current with one kind (see the module docstring); ``run`` forever."""

    def __init__(
        self,
        client: KubeClient,
        info: KindInfo,
        sink: WatchSink,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        watch_seconds: tuple[int, int] = WATCH_SECONDS,
    ) -> None:
        self.client = client
        self.info = info
        self.sink = sink
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_seconds = watch_seconds
        self.state = WatchState(info.kind)
        self.synced = asyncio.Event()
        self._logged: str | None = None

    def _params(self) -> dict[str, str]:
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def run(self) -> None:
        delay = BACKOFF_FIRST
        version: str | None = None
        path = self.info.path(self.info.scope)
        while True:
            try:
                if version is None:
                    items, version = await self.client.list(
                        path, self._params(), page=self.page_size
                    )
                    self.sink.replace(self.info, items)
                    self._listed(version)
                timeout = random.randint(*self.watch_seconds)
                params = {
                    **self._params(),
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(timeout),
                }
                events = self.client.watch(
                    path, params, read_timeout=timeout + 60, opened=self._watching
                )
                async for event in events:
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    self.state.resource_version = version or ""
                    if event.get("type") != "BOOKMARK":
                        self.state.events += 1
                        self.sink.event(self.info, str(event.get("type")), obj)
                    delay = BACKOFF_FIRST
            except Gone as err:
                log.info("%s: %s; listing again", self.info, err)
                version = None
            except NotFound as err:
                if version is not None:  # the kind went away while watched (CRD deleted)
                    version = None
                    continue
                self._absent(err)
                await asyncio.sleep(ABSENT_RETRY)
            except Forbidden as err:
                self._failed(err, logging.ERROR, hint=True)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
            except KubeError as err:
                self._failed(err, logging.WARNING)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)

    def _listed(self, version: str) -> None:
        state = self.state
        state.resource_version, state.lists, state.since = version, state.lists + 1, time.time()
        state.served = True
        self._recovered()
        state.synced = True
        self.synced.set()

    def _watching(self) -> None:
        """The API server accepted a watch: whatever failed before is over."""
        self._recovered()

    def _recovered(self) -> None:
        self.state.error = None
        if self._logged is not None:
            log.info("%s: watching again", self.info)
            self._logged = None

    def _absent(self, err: KubeError) -> None:
        self.sink.replace(self.info, [])
        self.state.served, self.state.synced = False, True
        self.state.error = "not served by the API server (is its CRD installed?)"
        self.synced.set()
        if self._logged != self.state.error:
            log.warning("%s: %s; checking again every %ds", self.info, err, ABSENT_RETRY)
            self._logged = self.state.error

    def _failed(self, err: KubeError, level: int, *, hint: bool = False) -> None:
        message = str(err)
        if hint:
            message += (
                f" — the control plane's account may not list/watch {self.info}: "
                "check its ClusterRole (ambient install creates ambient-istiod)"
            )
        self.state.error = message
        if self._logged != message:
            log.log(level, "%s: %s", self.info, message)
            self._logged = message
