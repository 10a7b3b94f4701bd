"""The compiled route table: which routes attach to which service port, and ``route()``.

Attachment:

- An HTTPRoute or a GRPCRoute attaches to a Service through a ``parentRefs`` entry with
  ``kind: Service`` and group ``""``/``core`` (GAMMA); ``port`` narrows it to
  that service port. Only producer routes apply at the waypoint: a parentRef to
  a Service in another namespace (a consumer route, which depends on the
  caller's namespace) is not attached and reports ``Accepted=False``. Other
  parents (a Gateway) are for ingress and ignored here.
- A VirtualService applies to the services its ``hosts`` name (short names in
  its namespace, FQDNs, ``*.suffix``, ``*``) when ``gateways`` is empty or lists
  ``mesh``. An exact host beats a wildcard; between equals, the first by
  ``namespace/name`` applies alone — as Istio at a waypoint, VirtualServices
  for one host are not merged — and the others report ``Accepted=False``.
- **HTTPRoute and VirtualService on one service**: Istio calls the mix
  unsupported. We decide: HTTPRoutes (and GRPCRoutes) win (the Gateway API is
  ambient's primary routing API), and the VirtualService reports
  ``Accepted=False`` naming them.
- **HTTPRoute and GRPCRoute on one service port**: never merged (the spec);
  the kind of the first route by ``namespace/name`` applies, the others report
  ``Accepted=False`` (``Conflicted``).

Routing: with nothing attached, a request goes to the addressed service and
port (route ``default``; a workload-addressed request goes to the workload:
``Backend.hostname`` is its IP). With routes attached, the first matching
entry decides, and a request no entry matches gets 404.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ambient.config.configset import ConfigSet
from ambient.config.destinationrule import DestinationRule
from ambient.config.grpcroute import GRPCRoute
from ambient.config.httproute import HTTPRoute
from ambient.config.rules import CLUSTER_DOMAIN
from ambient.config.virtualservice import VirtualService
from ambient.waypoint.model import Backend, RequestHead, RouteDecision, Target
from ambient.waypoint.routing.action import Rng, error_decision
from ambient.waypoint.routing.context import (
    CompileContext,
    DestinationPolicy,
    Entry,
    RouteCondition,
)
from ambient.waypoint.routing.gateway import GatewayRoute, compile_httproute, route_key
from ambient.waypoint.routing.grpcroute import compile_grpcroute
from ambient.waypoint.routing.istio import compile_virtual_service, vs_key
from ambient.waypoint.routing.match import RequestView
from ambient.waypoint.routing.services import ServiceIndex, ServiceLike

__all__ = ["RouteTable", "ServiceRoutes", "build_router"]

DEFAULT_ROUTE = "default"


@dataclass(frozen=True, slots=True)
class ServiceRoutes:
    """The ordered entries for one service port, and the answer when none matches."""

    entries: tuple[Entry, ...]
    not_found: RouteDecision


class RouteTable:
    """The ``Router`` of ``waypoint.model``: pure, built once per configuration."""

    def __init__(
        self,
        routes: dict[tuple[str, int], ServiceRoutes],
        defaults: dict[tuple[str, int], RouteDecision],
        conditions: tuple[RouteCondition, ...] = (),
        rng: Rng | None = None,
    ) -> None:
        self._routes = routes
        self._defaults = defaults
        self.conditions = conditions
        self._rng: Rng = rng if rng is not None else random.Random()

    def route(self, target: Target, request: RequestHead) -> RouteDecision:
        hostname = target.hostname
        if hostname is None:
            return RouteDecision(
                DEFAULT_ROUTE,
                backend=Backend(target.namespace, str(target.address), target.port),
            )
        key = (hostname, target.port)
        attached = self._routes.get(key)
        if attached is None:
            decision = self._defaults.get(key)
            if decision is None:
                backend = Backend(target.namespace, hostname, target.port)
                decision = RouteDecision(DEFAULT_ROUTE, backend=backend)
            return decision
        view = RequestView(request, target.port)
        for entry in attached.entries:
            if entry.matcher.matches(view):
                return entry.action.decide(target, request, view.path, self._rng)
        return attached.not_found

    def describe(self) -> list[tuple[str, int, tuple[Entry, ...], RouteDecision]]:
        """Every service port: (hostname, port, its entries, the decision when none
        applies or nothing is attached), for ``ambient proxy-config``."""
        keys = sorted({*self._routes, *self._defaults})
        out = []
        for hostname, port in keys:
            attached = self._routes.get((hostname, port))
            default = self._defaults.get((hostname, port))
            if attached is not None:
                out.append((hostname, port, attached.entries, attached.not_found))
            elif default is not None:
                out.append((hostname, port, (), default))
        return out

    def attached(self, hostname: str, port: int) -> tuple[str, ...]:
        """The routes (``ns/name``) attached to a service port, for diagnostics."""
        routes = self._routes.get((hostname, port))
        if routes is None:
            return ()
        return tuple(dict.fromkeys(entry.action.route for entry in routes.entries))


def _policies(
    rules: Iterable[DestinationRule], services: ServiceIndex
) -> dict[str, DestinationPolicy]:
    by_host: dict[str, list[DestinationRule]] = defaultdict(list)
    for rule in sorted(rules, key=lambda r: (r.meta.namespace, r.meta.name)):
        by_host[services.fqdn(rule.spec.host, rule.meta.namespace)].append(rule)
    out = {}
    for host, found in by_host.items():
        service = services.by_hostname.get(host)
        own = service.namespace if service else ""
        found.sort(key=lambda r: r.meta.namespace != own)  # stable: own namespace first
        out[host] = DestinationPolicy.merge(found)
    return out


def _attach_gateway_routes(
    routes: Sequence[GatewayRoute], ctx: CompileContext
) -> dict[tuple[str, int], list[Entry]]:
    attached: dict[tuple[str, int], list[Entry]] = defaultdict(list)
    for rank, route in enumerate(sorted(routes, key=route_key)):
        for parent in route.spec.parent_refs:
            if not parent.is_service:
                continue
            namespace = parent.namespace or route.meta.namespace
            if namespace != route.meta.namespace:
                ctx.condition(
                    route,
                    "Accepted",
                    False,
                    "NotAllowedByParent",
                    f"parent Service {namespace}/{parent.name} is in another namespace: "
                    "consumer routes are not supported at a waypoint",
                )
                continue
            service = ctx.services.named(namespace, parent.name)
            if service is None:
                ctx.condition(
                    route,
                    "Accepted",
                    False,
                    "NoMatchingParent",
                    f"parent Service {namespace}/{parent.name} not found",
                )
                continue
            ports = service.ports if parent.port is None else (parent.port,)
            if parent.port is not None and parent.port not in service.ports:
                ctx.condition(
                    route,
                    "Accepted",
                    False,
                    "NoMatchingParent",
                    f"parent Service {namespace}/{parent.name} has no port {parent.port}",
                )
                continue
            entries_of = {port: _compile(route, rank, ctx) for port in ports}
            for port, entries in entries_of.items():
                attached[(service.hostname, port)].extend(entries)
    return attached


def _compile(route: GatewayRoute, rank: int, ctx: CompileContext) -> list[Entry]:
    if isinstance(route, GRPCRoute):
        return compile_grpcroute(route, rank, ctx)
    return compile_httproute(route, rank, ctx)


def _one_kind_per_port(
    http: dict[tuple[str, int], list[Entry]],
    grpc: dict[tuple[str, int], list[Entry]],
    routes: dict[str, GatewayRoute],
    ctx: CompileContext,
) -> dict[tuple[str, int], list[Entry]]:
    """HTTPRoutes and GRPCRoutes are never merged: where both attach to a service port, the
    kind of the first route by ``namespace/name`` (the spec's tie-break after age) applies
    and the routes of the other kind report ``Accepted=False`` (reason ``Conflicted``)."""
    merged = dict(http)
    for key, entries in grpc.items():
        if key not in merged:
            merged[key] = entries
            continue
        first_http = min(e.action.route for e in merged[key])
        first_grpc = min(e.action.route for e in entries)
        winner, loser = (
            (merged[key], entries) if first_http < first_grpc else (entries, merged[key])
        )
        kept = min(e.action.route for e in winner)
        for name in sorted({e.action.route for e in loser}):
            ctx.condition(
                routes[name],
                "Accepted",
                False,
                "Conflicted",
                f"{routes[kept].kind} {kept} attaches to {key[0]}:{key[1]} too; "
                "HTTPRoutes and GRPCRoutes are not merged, the first by namespace/name applies",
            )
        merged[key] = winner
    return merged


def _attach_virtual_services(
    services: list[VirtualService], ctx: CompileContext, taken: set[str]
) -> dict[tuple[str, int], list[Entry]]:
    chosen: dict[str, tuple[tuple[int, str], VirtualService]] = {}
    for vs in services:
        if vs.spec.gateways and "mesh" not in vs.spec.gateways:
            continue
        for host in vs.spec.hosts:
            wildcard = 1 if host.startswith("*") else 0
            for service in ctx.services.matching(host, vs.meta.namespace):
                rank = (wildcard, vs_key(vs))
                current = chosen.get(service.hostname)
                if current is None or rank < current[0]:
                    chosen[service.hostname] = (rank, vs)
    attached: dict[tuple[str, int], list[Entry]] = {}
    for hostname, (_, vs) in sorted(chosen.items()):
        if hostname in taken:
            ctx.condition(
                vs,
                "Accepted",
                False,
                "Overridden",
                f"HTTPRoutes attach to {hostname}; they take precedence over VirtualServices",
            )
            continue
        service = ctx.services.by_hostname[hostname]
        for port in service.ports:
            entries = compile_virtual_service(vs, port, ctx)
            if entries:  # no rule for this port: the port keeps its default route
                attached[(hostname, port)] = entries
    for vs in services:
        for host in vs.spec.hosts:
            for service in ctx.services.matching(host, vs.meta.namespace):
                owner = chosen[service.hostname][1]
                if owner is not vs:
                    ctx.condition(
                        vs,
                        "Accepted",
                        False,
                        "Overridden",
                        f"VirtualService {vs_key(owner)} applies to {service.hostname}",
                    )
    return attached


def _not_found(entries: list[Entry]) -> RouteDecision:
    name = entries[0].action.route if entries else DEFAULT_ROUTE
    return error_decision(name, 404, "no route matched")


def build_router(
    config: ConfigSet,
    services: Iterable[ServiceLike] | None = None,
    *,
    rng: Rng | None = None,
    domain: str = CLUSTER_DOMAIN,
) -> RouteTable:
    """Compile the HTTPRoutes, GRPCRoutes, VirtualServices and DestinationRules of ``config``.

    ``services`` is the mesh's services (``MeshService``, the workload API's
    ``Service`` or the configuration's); by default the Services of ``config``.
    """
    index = ServiceIndex(services if services is not None else config.services(), domain)
    rules = [o for o in config.by_kind("DestinationRule") if isinstance(o, DestinationRule)]
    ctx = CompileContext(index, _policies(rules, index))
    httproutes = [o for o in config.by_kind("HTTPRoute") if isinstance(o, HTTPRoute)]
    grpcroutes = [o for o in config.by_kind("GRPCRoute") if isinstance(o, GRPCRoute)]
    by_key: dict[str, GatewayRoute] = {route_key(r): r for r in httproutes}
    by_key.update((route_key(r), r) for r in grpcroutes)
    gateway = _one_kind_per_port(
        _attach_gateway_routes(httproutes, ctx),
        _attach_gateway_routes(grpcroutes, ctx),
        by_key,
        ctx,
    )
    taken = {hostname for hostname, _ in gateway}
    vss = sorted(
        (o for o in config.by_kind("VirtualService") if isinstance(o, VirtualService)),
        key=vs_key,
    )
    istio = _attach_virtual_services(vss, ctx, taken)
    table: dict[tuple[str, int], ServiceRoutes] = {}
    for key, entries in gateway.items():
        entries.sort(key=lambda e: e.key)
        table[key] = ServiceRoutes(tuple(entries), _not_found(entries))
    for key, entries in istio.items():
        table[key] = ServiceRoutes(tuple(entries), _not_found(entries))
    defaults = {}
    for service in index.by_hostname.values():
        for port in service.ports:
            if (service.hostname, port) not in table:
                backend = ctx.backend(service, port)
                defaults[(service.hostname, port)] = RouteDecision(DEFAULT_ROUTE, backend=backend)
    return RouteTable(table, defaults, ctx.conditions, rng)
