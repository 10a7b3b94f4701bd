"""Waypoint pods in ``ambient up --netns``: a network namespace per waypoint pod.

A waypoint pod has no processes (its node proxy hosts the waypoint, see
``ambient.ztunnel.waypoints``) and the kubelet does not run it, so nothing else
would give it a namespace. Without one its address (from ``10.244.0.0/16``)
exists nowhere and the waypoint cannot listen. :class:`NetnsWaypoint` makes the
pod's namespace on its node first (linked and routed like any pod's; never
captured: a waypoint's traffic is its own), then runs the waypoint inside it:
its HBONE listener, admin endpoints and upstream connections all use sockets
made in that namespace. Stopping runs the other way.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ambient.netns import NetnsThread
from ambient.state.workload import Workload, waypoint_of
from ambient.ztunnel.waypoints import HostedWaypoint, WaypointFactory

log = logging.getLogger("ambient.nodeagent")


class PodNamespaces(Protocol):
    """Who makes pod namespaces: the node agent itself (one process) or, for a ztunnel
    process, its client of the node agent's socket (``ambient.nodeagent.podsocket``)."""

    async def add_pod(self, namespace: str, name: str, node: str, ip: str) -> str: ...

    async def remove_pod(self, ip: str) -> None: ...

    def netns_of(self, workload: Workload) -> NetnsThread | None: ...


class NetnsWaypointMaker(Protocol):
    def __call__(self, workload: Workload, netns: NetnsThread | None = None) -> HostedWaypoint: ...


class NetnsWaypoint:
    """One waypoint pod: its namespace, then its waypoint inside it (``HostedWaypoint``)."""

    def __init__(self, agent: PodNamespaces, make: NetnsWaypointMaker, workload: Workload) -> None:
        self.agent = agent
        self.make = make
        self.workload = workload
        self.waypoint: HostedWaypoint | None = None
        self._ip = str(workload.addresses[0])

    async def start(self) -> None:
        w = self.workload
        name = await self.agent.add_pod(w.namespace, w.name, w.node, self._ip)
        netns = self.agent.netns_of(w)
        if netns is None:  # add_pod just made it
            raise OSError(f"waypoint pod {w.namespace}/{w.name}: no network namespace {name}")
        self.waypoint = self.make(w, netns)
        try:
            await self.waypoint.start()
        except BaseException:
            await self.close()
            raise
        log.info(
            "waypoint %s/%s (%s) runs in %s", w.namespace, waypoint_of(w) or w.name, self._ip, name
        )

    async def close(self) -> None:
        if self.waypoint is not None:
            await self.waypoint.close()
            self.waypoint = None
        await self.agent.remove_pod(self._ip)

    @property
    def ready(self) -> bool:
        return self.waypoint is not None and self.waypoint.ready

    def describe(self) -> dict[str, Any]:
        return {"netns": True, **(self.waypoint.describe() if self.waypoint is not None else {})}

    def proxy_config(self) -> dict[str, Any]:
        return self.waypoint.proxy_config() if self.waypoint is not None else {}


def netns_waypoints(agent: PodNamespaces, make: NetnsWaypointMaker) -> WaypointFactory:
    """The node proxy's waypoint factory for ``--netns``: each waypoint in its pod's namespace."""
    return lambda workload: NetnsWaypoint(agent, make, workload)
