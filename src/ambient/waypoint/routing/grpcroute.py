"""Compiling Gateway API GRPCRoutes attached to one service port into ordered entries.

A gRPC method is the request path ``/<service>/<method>``, so a method match
becomes a path match, as Istio translates it:

- ``Exact`` with service and method: the exact path ``/svc/Method``;
- ``Exact`` with the service only: the string prefix ``/svc/``;
- ``Exact`` with the method only: the regex ``/[^/]+/Method``;
- ``RegularExpression``: the regex ``/<service>/<method>``, a missing part
  being ``[^/]+``.

Precedence across the rules of every GRPCRoute on the port (GRPCRouteRule):
the most characters in a matching service, then in a matching method, then the
most header matches; then the older route (by ``namespace/name``: we have no
creation timestamps), then rule and match order. GRPCRoute defines no
timeouts; retries are Istio's default policy. An unresolvable backendRef
answers 503 (UNAVAILABLE to a gRPC client, as the spec asks); no matching rule
is a 404 (UNIMPLEMENTED).
"""

from __future__ import annotations

import re

from ambient.config.grpcroute import GRPCRoute, GRPCRouteMatch, GRPCRouteRule
from ambient.config.regex import compile_re2
from ambient.waypoint.resilience.retry import DEFAULT_RETRY
from ambient.waypoint.routing.action import RouteAction
from ambient.waypoint.routing.context import CompileContext, Entry
from ambient.waypoint.routing.gateway import header_ops, mirrors, route_key, string_test, weighted
from ambient.waypoint.routing.match import Matcher, PathKind

__all__ = ["compile_grpcroute", "method_path"]

ANY_PART = "[^/]+"


def method_path(match: GRPCRouteMatch) -> tuple[PathKind, str]:
    """The path condition of a match's method: (kind, value or RE2 pattern)."""
    method = match.method
    if method is None:
        return PathKind.ANY, ""
    service, name = method.service or "", method.method or ""
    if method.type == "RegularExpression":
        return PathKind.REGEX, f"/{service or ANY_PART}/{name or ANY_PART}"
    if not name:
        return PathKind.STRING_PREFIX, f"/{service}/"
    if not service:
        return PathKind.REGEX, f"/{ANY_PART}/{re.escape(name)}"
    return PathKind.EXACT, f"/{service}/{name}"


def _matcher(match: GRPCRouteMatch) -> Matcher:
    kind, value = method_path(match)
    pattern = compile_re2(value) if kind is PathKind.REGEX else None
    headers = tuple((h.name.lower(), string_test(h.type, h.value)) for h in match.headers)
    return Matcher(kind, value if kind is not PathKind.REGEX else "", pattern, headers=headers)


def _precedence(
    match: GRPCRouteMatch, route_rank: int, rule_index: int, match_index: int
) -> tuple[int, ...]:
    method = match.method
    service = len(method.service or "") if method else 0
    name = len(method.method or "") if method else 0
    return (-service, -name, -len(match.headers), route_rank, rule_index, match_index)


def _action(rule: GRPCRouteRule, route: GRPCRoute, ctx: CompileContext) -> RouteAction:
    by_type = {f.type: f for f in rule.filters}
    request = by_type.get("RequestHeaderModifier")
    response = by_type.get("ResponseHeaderModifier")
    return RouteAction(
        route_key(route),
        tuple(weighted(ref, route, ctx, 503) for ref in rule.backend_refs),
        request_headers=header_ops(request.request_header_modifier if request else None),
        response_headers=header_ops(response.response_header_modifier if response else None),
        mirrors=mirrors(rule.filters, route, ctx),
        retry=DEFAULT_RETRY,
        no_backend_status=503,
    )


def compile_grpcroute(route: GRPCRoute, route_rank: int, ctx: CompileContext) -> list[Entry]:
    """Every (rule, match) of ``route`` as a sortable entry."""
    entries = []
    for rule_index, rule in enumerate(route.spec.rules):
        action = _action(rule, route, ctx)
        for match_index, match in enumerate(rule.matches):
            key = _precedence(match, route_rank, rule_index, match_index)
            entries.append(Entry(key, _matcher(match), action))
    return entries
