"""Compiling Gateway API HTTPRoutes attached to one service port into ordered entries.

Precedence across every rule of every HTTPRoute on the port (Gateway API
HTTPRouteRule): Exact path, then RegularExpression path (Istio's order; the spec
leaves regex to implementations), then the longest PathPrefix; then a method
match; then the most header matches; then the most query parameter matches;
then the older route — we have no creation timestamps, so routes rank by
``namespace/name`` (the spec's next tie-break); then rule and match order.

Unresolvable backendRefs (no such Service or port, another namespace without
a ReferenceGrant — which we do not implement, another kind) keep their weight
and answer 500, and the route reports ``ResolvedRefs=False``, as the spec asks.
"""

from __future__ import annotations

import dataclasses

from ambient.config.grpcroute import GRPCRoute
from ambient.config.httproute import (
    BackendRef,
    Filter,
    HeaderModifier,
    HTTPRoute,
    Match,
    PathModifier,
    Retry,
    Rule,
    ServiceRef,
)
from ambient.config.regex import compile_re2
from ambient.waypoint.model import Backend, HeaderOps, Mirror
from ambient.waypoint.resilience.retry import DEFAULT_RETRY, RetryPolicy
from ambient.waypoint.routing.action import RouteAction, WeightedBackend
from ambient.waypoint.routing.context import CompileContext, Entry
from ambient.waypoint.routing.filters import (
    GatewayPath,
    GatewayRedirect,
    GatewayRewrite,
    merge_header_ops,
)
from ambient.waypoint.routing.match import Matcher, Op, PathKind, StringTest

__all__ = [
    "GatewayRoute",
    "compile_httproute",
    "header_ops",
    "mirrors",
    "route_key",
    "string_test",
    "weighted",
]

GatewayRoute = HTTPRoute | GRPCRoute

_PATH_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}


def route_key(route: GatewayRoute) -> str:
    return f"{route.meta.namespace}/{route.meta.name}"


def _precedence(
    match: Match, route_rank: int, rule_index: int, match_index: int
) -> tuple[int, ...]:
    return (
        _PATH_RANK[match.path.type],
        -len(match.path.value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
        route_rank,
        rule_index,
        match_index,
    )


def _matcher(match: Match) -> Matcher:
    path = match.path
    if path.type == "Exact":
        kind, value, pattern = PathKind.EXACT, path.value, None
    elif path.type == "RegularExpression":
        kind, value, pattern = PathKind.REGEX, path.value, compile_re2(path.value)
    elif path.value.rstrip("/") == "":
        kind, value, pattern = PathKind.ANY, "", None
    else:
        kind, value, pattern = PathKind.SEGMENT_PREFIX, path.value.rstrip("/"), None
    headers = tuple((h.name.lower(), string_test(h.type, h.value)) for h in match.headers)
    query = tuple((q.name, string_test(q.type, q.value)) for q in match.query_params)
    method = StringTest(Op.EXACT, match.method) if match.method else None
    return Matcher(kind, value, pattern, method=method, headers=headers, query=query)


def string_test(kind: str, value: str) -> StringTest:
    if kind == "RegularExpression":
        return StringTest(Op.REGEX, value, compile_re2(value))
    return StringTest(Op.EXACT, value)


def header_ops(mod: HeaderModifier | None) -> HeaderOps:
    if mod is None:
        return HeaderOps()
    return HeaderOps(
        tuple((h.name.lower(), h.value) for h in mod.set),
        tuple((h.name.lower(), h.value) for h in mod.add),
        tuple(name.lower() for name in mod.remove),
    )


def _path(mod: PathModifier | None, match: Match) -> GatewayPath | None:
    if mod is None:
        return None
    if mod.type == "ReplaceFullPath":
        return GatewayPath(mod.replace_full_path or "/")
    return GatewayPath(mod.replace_prefix_match or "", match.path.value)


def _service_backend(
    ref: ServiceRef | BackendRef, route: GatewayRoute, ctx: CompileContext
) -> tuple[Backend | None, str, str]:
    """The backend a ref names, or None with the condition reason and message."""
    namespace = ref.namespace or route.meta.namespace
    if ref.kind != "Service" or ref.group not in ("", "core"):
        return (
            None,
            "InvalidKind",
            f"backendRef kind {ref.group or 'core'}/{ref.kind} is not supported",
        )
    if namespace != route.meta.namespace:
        message = f"Service {namespace}/{ref.name} is in another namespace and ReferenceGrant is not supported"
        return None, "RefNotPermitted", message
    service = ctx.services.named(namespace, ref.name)
    if service is None:
        return None, "BackendNotFound", f"Service {namespace}/{ref.name} not found"
    assert ref.port is not None
    if ref.port not in service.ports:
        return None, "BackendNotFound", f"Service {namespace}/{ref.name} has no port {ref.port}"
    return ctx.backend(service, ref.port), "", ""


def weighted(
    ref: BackendRef, route: GatewayRoute, ctx: CompileContext, error_status: int = 500
) -> WeightedBackend:
    """A backendRef with its filters; unresolved: answered ``error_status`` (HTTPRoute 500,
    GRPCRoute 503 so that gRPC clients get UNAVAILABLE, as the spec asks)."""
    backend, reason, problem = _service_backend(ref, route, ctx)
    if backend is None:
        ctx.condition(route, "ResolvedRefs", False, reason, problem)
    request_ops = [header_ops(f.request_header_modifier) for f in ref.filters]
    response_ops = [header_ops(f.response_header_modifier) for f in ref.filters]
    return WeightedBackend(
        backend,
        ref.weight,
        error_status,
        problem,
        merge_header_ops(request_ops),
        merge_header_ops(response_ops),
    )


def mirrors(
    filters: tuple[Filter, ...], route: GatewayRoute, ctx: CompileContext
) -> tuple[Mirror, ...]:
    out = []
    for flt in filters:
        if flt.request_mirror is None:
            continue
        backend, reason, problem = _service_backend(flt.request_mirror.backend_ref, route, ctx)
        if backend is None:
            ctx.condition(route, "ResolvedRefs", False, reason, f"mirror: {problem}")
        elif flt.request_mirror.share > 0:
            out.append(Mirror(backend, flt.request_mirror.share))
    return tuple(out)


def _retry(spec: Retry | None) -> RetryPolicy | None:
    """HTTPRoute ``retry`` as Istio translates it (no ``retry``: Istio's default policy)."""
    if spec is None:
        return DEFAULT_RETRY
    attempts = 2 if spec.attempts is None else spec.attempts
    retry_on = ",".join(
        ["connect-failure,refused-stream,unavailable,cancelled"]
        + [str(code) for code in spec.codes]
    )
    return RetryPolicy.build(attempts, retry_on, backoff=spec.backoff)


def _action(rule: Rule, match: Match, route: HTTPRoute, ctx: CompileContext) -> RouteAction:
    by_type = {f.type: f for f in rule.filters}
    redirect = by_type.get("RequestRedirect")
    rewrite = by_type.get("URLRewrite")
    compiled_redirect = None
    if redirect is not None and redirect.request_redirect is not None:
        spec = redirect.request_redirect
        compiled_redirect = GatewayRedirect(
            spec.scheme, spec.hostname, spec.port, _path(spec.path, match), spec.status_code
        )
    compiled_rewrite = None
    if rewrite is not None and rewrite.url_rewrite is not None:
        spec_rw = rewrite.url_rewrite
        compiled_rewrite = GatewayRewrite(spec_rw.hostname, _path(spec_rw.path, match))
    timeout = rule.timeouts.request or None
    retry = _retry(rule.retry)
    per_try = rule.timeouts.backend_request or None
    if per_try is not None:
        if rule.retry is not None and retry is not None:
            retry = dataclasses.replace(retry, per_try_timeout=per_try)
        elif timeout is None or per_try < timeout:
            timeout = per_try
    return RouteAction(
        route_key(route),
        tuple(weighted(ref, route, ctx) for ref in rule.backend_refs),
        request_headers=header_ops(
            by_type["RequestHeaderModifier"].request_header_modifier
            if "RequestHeaderModifier" in by_type
            else None
        ),
        response_headers=header_ops(
            by_type["ResponseHeaderModifier"].response_header_modifier
            if "ResponseHeaderModifier" in by_type
            else None
        ),
        mirrors=mirrors(rule.filters, route, ctx),
        timeout=timeout,
        retry=retry,
        redirect=compiled_redirect,
        rewrite=compiled_rewrite,
        no_backend_status=500,
    )


def compile_httproute(route: HTTPRoute, route_rank: int, ctx: CompileContext) -> list[Entry]:
    """Every (rule, match) of ``route`` as a sortable entry."""
    entries = []
    for rule_index, rule in enumerate(route.spec.rules):
        for match_index, match in enumerate(rule.matches):
            entries.append(
                Entry(
                    _precedence(match, route_rank, rule_index, match_index),
                    _matcher(match),
                    _action(rule, match, route, ctx),
                )
            )
    return entries
