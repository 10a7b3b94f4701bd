"""The waypoints a node proxy hosts: one L7 proxy per waypoint pod scheduled on this node.

Istio runs each waypoint as its own Envoy Deployment. Here a waypoint Gateway's
pods (see ``ambient.controlplane.waypoints``) have no processes: the node proxy
of the node a waypoint pod is scheduled on serves it, on the pod's address, with
the pod's own identity (the CA signs it for this node because the pod runs here).
That keeps one credential per node and lets ``ambient up`` run a waypoint with
no extra process per waypoint; the waypoint's listeners, certificates, metrics
and policy are its own all the same.

``WaypointHost`` follows the pushed state: a waypoint pod appearing on this node
starts a waypoint, one leaving (or changing address) stops it, draining its
connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ambient.state.workload import Workload

__all__ = ["HostedWaypoint", "WaypointFactory", "WaypointHost"]

log = logging.getLogger(__name__)


class HostedWaypoint(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def describe(self) -> dict[str, Any]:
        """What ``/config_dump`` shows of it besides its pod (its L7 configuration)."""
        ...

    def proxy_config(self) -> dict[str, Any]:
        """What it compiled: listeners, routes, clusters (``/waypoint_config_dump``)."""
        ...


WaypointFactory = Callable[[Workload], HostedWaypoint]


class WaypointHost:
    """Starts and stops the waypoints of this node's waypoint pods."""

    def __init__(self, node: str, factory: WaypointFactory | None) -> None:
        self.node = node
        self.factory = factory
        self.running: dict[str, tuple[Workload, HostedWaypoint]] = {}

    async def reconcile(self, workloads: Iterable[Workload]) -> None:
        wanted = {w.uid: w for w in workloads if w.addresses}
        for uid in [u for u in self.running if u not in wanted]:
            await self._stop(uid)
        if self.factory is None:
            if wanted:
                log.warning(
                    "node %s: %d waypoint pod(s) scheduled here but this node proxy "
                    "was started without waypoint support: traffic bound to them fails",
                    self.node,
                    len(wanted),
                )
            return
        for uid, workload in wanted.items():
            current = self.running.get(uid)
            if current is not None and current[0].addresses == workload.addresses:
                self.running[uid] = (workload, current[1])
                continue
            if current is not None:
                await self._stop(uid)
            waypoint = self.factory(workload)
            try:
                await waypoint.start()
            except OSError as exc:
                log.error(
                    "node %s: cannot start waypoint %s/%s on %s: %s",
                    self.node,
                    workload.namespace,
                    workload.name,
                    workload.addresses[0],
                    exc,
                )
                continue
            self.running[uid] = (workload, waypoint)
            log.info(
                "node %s: waypoint %s/%s (%s) serving on %s:15008",
                self.node,
                workload.namespace,
                workload.name,
                workload.identity,
                workload.addresses[0],
            )

    async def _stop(self, uid: str) -> None:
        workload, waypoint = self.running.pop(uid)
        await waypoint.close()
        log.info("node %s: waypoint %s/%s stopped", self.node, workload.namespace, workload.name)

    async def close(self) -> None:
        for uid in list(self.running):
            await self._stop(uid)

    def proxy_configs(self) -> list[dict[str, Any]]:
        """Each running waypoint's compiled configuration, with its pod."""
        return [
            {
                "namespace": workload.namespace,
                "pod": workload.name,
                "node": self.node,
                **waypoint.proxy_config(),
            }
            for _, (workload, waypoint) in sorted(self.running.items())
        ]

    def config_dump(self) -> list[dict[str, Any]]:
        """The waypoints this node proxy runs, for ``/config_dump``."""
        return [
            {
                "workload": uid,
                "namespace": workload.namespace,
                "name": workload.name,
                "identity": str(workload.identity),
                "address": str(workload.addresses[0]),
                "ready": waypoint.ready,
                **waypoint.describe(),
            }
            for uid, (workload, waypoint) in sorted(self.running.items())
        ]
