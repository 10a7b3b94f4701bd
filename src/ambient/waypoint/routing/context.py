"""What compiling needs across objects: services, DestinationRules, and route conditions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ambient.config.consistenthash import ConsistentHash
from ambient.config.destinationrule import (
    DEFAULT_POOL,
    DestinationRule,
    LoadBalancer,
    LoadBalancerSetting,
    OutlierPolicy,
    PoolPolicy,
    Subset,
    TrafficPolicy,
)
from ambient.config.resources import Resource
from ambient.frozen import FrozenMap
from ambient.waypoint.model import Backend
from ambient.waypoint.routing.action import RouteAction
from ambient.waypoint.routing.match import Matcher
from ambient.waypoint.routing.services import MeshService, ServiceIndex

__all__ = ["CompileContext", "DestinationPolicy", "Entry", "RouteCondition"]


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


@dataclass(frozen=True)
class DestinationPolicy:
    """The merged DestinationRules of one service host."""

    subsets: FrozenMap[str, Subset] = field(default_factory=FrozenMap)
    traffic_policy: TrafficPolicy | None = None

    @staticmethod
    def merge(rules_in_order: Iterable[DestinationRule]) -> DestinationPolicy:
        subsets: dict[str, Subset] = {}
        policy: TrafficPolicy | None = None
        for rule in rules_in_order:
            for subset in rule.spec.subsets:
                subsets.setdefault(subset.name, subset)
            if policy is None:
                policy = rule.spec.traffic_policy
        return DestinationPolicy(FrozenMap(subsets), policy)

    def load_balancer(self, port: int, subset: Subset | None = None) -> LoadBalancerSetting:
        """The load-balancing policy for ``port`` (and ``subset``), most specific first:
        a simple policy or a consistent hash."""
        for policy in (subset.traffic_policy if subset else None, self.traffic_policy):
            chosen = policy.for_port(port) if policy is not None else None
            if chosen is not None:
                return chosen
        return LoadBalancer.ROUND_ROBIN

    def resilience(
        self, port: int, subset: Subset | None = None
    ) -> tuple[PoolPolicy, OutlierPolicy | None]:
        """The circuit breakers and outlier detection of one cluster (istiod's merge)."""
        pool: PoolPolicy | None = None
        outlier: OutlierPolicy | None = None
        if self.traffic_policy is not None:
            pool, outlier = self.traffic_policy.resilience(port)
        sub = subset.traffic_policy if subset is not None else None
        if sub is not None:
            if any(s.port == port for s in sub.port_level_settings):
                pool, outlier = sub.resilience(port)
            else:
                pool = sub.connection_pool or pool
                outlier = sub.outlier_detection or outlier
        return pool or DEFAULT_POOL, outlier


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
        hashing = lb if isinstance(lb, ConsistentHash) else None
        return Backend(
            service.namespace,
            service.hostname,
            port,
            subset.name if subset else None,
            subset.labels if subset else FrozenMap(),
            lb if isinstance(lb, LoadBalancer) else LoadBalancer.ROUND_ROBIN,
            pool,
            outlier,
            hashing,
        )
