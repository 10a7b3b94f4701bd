"""What compiling needs across objects: services, DestinationRules, and route conditions."""

from __future__ import annotations

from dataclasses import dataclass

from ambient.config.resources import Resource
from ambient.frozen import FrozenMap
from ambient.waypoint.model import Backend
from ambient.waypoint.routing.action import RouteAction
from ambient.waypoint.routing.destinationrule import DestinationPolicy, Subset
from ambient.waypoint.routing.match import Matcher
from ambient.waypoint.routing.services import MeshService, ServiceIndex

__all__ = ["CompileContext", "Entry", "RouteCondition"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One (rule, match) of a route: ``key`` orders HTTPRoute entries (VirtualService: list order)."""

    key: tuple[int, ...]
    matcher: Matcher
    action: RouteAction


@dataclass(frozen=True)
class RouteCondition:
    """A status condition of a route object, as Gateway API reports them (``Accepted``,
    ``ResolvedRefs``); VirtualServices get the same shape."""

    kind: str
    namespace: str
    name: str
    type: str
    status: bool
    reason: str
    message: str

    def __str__(self) -> str:
        state = "True" if self.status else "False"
        return (
            f"{self.kind} {self.namespace}/{self.name}: {self.type}={state} "
            f"({self.reason}): {self.message}"
        )


class CompileContext:
    def __init__(self, services: ServiceIndex, policies: dict[str, DestinationPolicy]) -> None:
        self.services = services
        self.policies = policies
        self._conditions: dict[tuple[str, str, str, str, str], RouteCondition] = {}

    def condition(self, obj: Resource, type_: str, status: bool, reason: str, message: str) -> None:
        key = (obj.kind, obj.meta.namespace, obj.meta.name, type_, message)
        self._conditions.setdefault(
            key,
            RouteCondition(
                obj.kind, obj.meta.namespace, obj.meta.name, type_, status, reason, message
            ),
        )

    @property
    def conditions(self) -> tuple[RouteCondition, ...]:
        return tuple(self._conditions.values())

    def backend(self, service: MeshService, port: int, subset: Subset | None = None) -> Backend:
        """A backend for ``service:port``, with the DestinationRule policy that applies."""
        policy = self.policies.get(service.hostname)
        merged = policy or DestinationPolicy()
        lb = merged.load_balancer(port, subset)
        pool, outlier = merged.resilience(port, subset)
        return Backend(
            service.namespace,
            service.hostname,
            port,
            subset.name if subset else None,
            subset.labels if subset else FrozenMap(),
            lb,
            pool,
            outlier,
        )
