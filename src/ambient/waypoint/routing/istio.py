"""Compiling a VirtualService's ``http`` rules for one service port into ordered entries.

Rules apply in the order written (first match wins, as Istio). Destinations
resolve as Istio does: a short host is a service in the VirtualService's
namespace; no ``port`` means the port the client dialled if the destination
has it, else the destination's only port; a ``subset`` comes from the
DestinationRules of the destination host.

Weights: one destination takes all traffic; with several, an unset weight is 0
unless no destination sets one (then they share equally). A destination that
does not resolve (unknown host, port or subset) keeps its weight and answers
503, as Envoy does for a missing cluster, and the VirtualService reports
``ResolvedRefs=False``.

Retries: a rule without ``retries`` gets Istio's default policy
(``resilience.retry``); ``attempts: 0`` turns retries off. ``fault`` becomes a
``FaultPolicy`` (percentages as given; none given: no request affected).

``rewrite.uri`` replaces the matched ``prefix``; after an ``exact`` or
``regex`` match it replaces the whole path; with no ``uri`` match it replaces
the leading ``/`` (Envoy's prefix rewrite of a catch-all route: ``/x`` with
``uri: /v2`` becomes ``/v2x``).
"""

from __future__ import annotations

import base64
import binascii
import re

from ambient.config.l7fields import GRPC_CODES
from ambient.config.regex import compile_re2
from ambient.config.virtualservice import (
    Destination,
    HeaderOperations,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRouteRule,
    StringMatch,
    VirtualService,
)
from ambient.waypoint.model import DirectResponse, HeaderOps, Mirror
from ambient.waypoint.resilience.fault import FaultPolicy
from ambient.waypoint.resilience.retry import DEFAULT_RETRY, RetryPolicy
from ambient.waypoint.routing.action import RouteAction, WeightedBackend
from ambient.waypoint.routing.context import CompileContext, Entry
from ambient.waypoint.routing.filters import IstioRedirect, IstioRewrite
from ambient.waypoint.routing.match import Matcher, Op, PathKind, StringTest
from ambient.waypoint.routing.services import MeshService

__all__ = ["compile_virtual_service", "vs_key"]

_CATCH_ALL = HTTPMatchRequest()


def vs_key(vs: VirtualService) -> str:
    return f"{vs.meta.namespace}/{vs.meta.name}"


def _test(match: StringMatch, *, invert: bool = False, ignore_case: bool = False) -> StringTest:
    if match.exact is not None:
        return StringTest(Op.EXACT, match.exact, invert=invert)
    if match.prefix is not None:
        return StringTest(Op.PREFIX, match.prefix, invert=invert)
    if match.regex is not None:
        return StringTest(
            Op.REGEX, match.regex, compile_re2(match.regex, ignore_case=ignore_case), invert=invert
        )
    return StringTest(Op.PRESENT, invert=invert)


def _matcher(match: HTTPMatchRequest) -> Matcher:
    uri = match.uri
    fold = match.ignore_uri_case
    kind, value, pattern = PathKind.ANY, "", None
    if uri is not None and uri.exact is not None:
        kind, value = PathKind.EXACT, uri.exact.lower() if fold else uri.exact
    elif uri is not None and uri.prefix is not None:
        kind, value = PathKind.STRING_PREFIX, uri.prefix.lower() if fold else uri.prefix
    elif uri is not None and uri.regex is not None:
        kind, value, pattern = PathKind.REGEX, uri.regex, compile_re2(uri.regex, ignore_case=fold)
    headers = [(name.lower(), _test(m)) for name, m in match.headers.items()]
    headers += [(name.lower(), _test(m, invert=True)) for name, m in match.without_headers.items()]
    return Matcher(
        kind,
        value,
        pattern,
        ignore_case=fold,
        method=_test(match.method) if match.method else None,
        headers=tuple(headers),
        query=tuple((name, _test(m)) for name, m in match.query_params.items()),
        authority=_test(match.authority) if match.authority else None,
        scheme=_test(match.scheme) if match.scheme else None,
    )


def _ops(ops: HeaderOperations) -> HeaderOps:
    return HeaderOps(
        tuple((k.lower(), v) for k, v in ops.set.items()),
        tuple((k.lower(), v) for k, v in ops.add.items()),
        tuple(k.lower() for k in ops.remove),
    )


def _destination(
    dest: Destination, weight: int, vs: VirtualService, port: int, ctx: CompileContext
) -> WeightedBackend:
    service = ctx.services.resolve(dest.host, vs.meta.namespace)
    problem = ""
    if service is None:
        problem = f"destination host {dest.host!r} is not a service of the mesh"
    else:
        chosen = _port(dest, service, port)
        if chosen is None:
            problem = f"destination {service.hostname} has several ports: set destination.port"
        elif chosen not in service.ports:
            problem = f"destination {service.hostname} has no port {chosen}"
        else:
            subset = None
            if dest.subset is not None:
                policy = ctx.policies.get(service.hostname)
                subset = policy.subsets.get(dest.subset) if policy else None
                if subset is None:
                    problem = (
                        f"subset {dest.subset!r} of {service.hostname} is not defined "
                        "by any DestinationRule"
                    )
            if not problem:
                return WeightedBackend(ctx.backend(service, chosen, subset), weight)
    ctx.condition(vs, "ResolvedRefs", False, "BackendNotFound", problem)
    return WeightedBackend(None, weight, 503, problem)


def _port(dest: Destination, service: MeshService, port: int) -> int | None:
    if dest.port is not None:
        return dest.port.number
    if port in service.ports:
        return port
    return service.ports[0] if len(service.ports) == 1 else None


def _weights(rule: HTTPRouteRule) -> list[int]:
    if len(rule.route) == 1:
        return [1]
    if all(d.weight is None for d in rule.route):
        return [1] * len(rule.route)
    return [d.weight or 0 for d in rule.route]


def _mirrors(
    rule: HTTPRouteRule, vs: VirtualService, port: int, ctx: CompileContext
) -> tuple[Mirror, ...]:
    wanted: list[tuple[Destination, float]] = []
    if rule.mirror is not None:
        share = rule.mirror_percentage.value if rule.mirror_percentage else 100.0
        wanted.append((rule.mirror, share))
    for policy in rule.mirrors:
        wanted.append((policy.destination, policy.percentage.value if policy.percentage else 100.0))
    out = []
    for dest, share in wanted:
        weighted = _destination(dest, 1, vs, port, ctx)
        if weighted.backend is not None and share > 0:
            out.append(Mirror(weighted.backend, share))
    return tuple(out)


def _direct(rule: HTTPRouteRule) -> DirectResponse | None:
    spec = rule.direct_response
    if spec is None:
        return None
    body = b""
    if spec.body is not None and spec.body.string is not None:
        body = spec.body.string.encode()
    elif spec.body is not None and spec.body.bytes is not None:
        try:
            body = base64.b64decode(spec.body.bytes, validate=True)
        except binascii.Error:
            body = spec.body.bytes.encode()
    headers = (("content-type", "text/plain"),) if body else ()
    return DirectResponse(spec.status, headers, body)


def _rewrite(rule: HTTPRouteRule, match: HTTPMatchRequest) -> IstioRewrite | None:
    spec = rule.rewrite
    if spec is None:
        return None
    prefix: str | None = None
    if match.uri is None:
        prefix = "/"
    elif match.uri.prefix is not None:
        prefix = match.uri.prefix
    regex: re.Pattern[str] | None = None
    substitution = ""
    if spec.uri_regex_rewrite is not None:
        regex = compile_re2(spec.uri_regex_rewrite.match)
        substitution = spec.uri_regex_rewrite.rewrite
    return IstioRewrite(
        spec.uri, prefix, regex, substitution, spec.authority, match.ignore_uri_case
    )


def retry_policy(spec: HTTPRetry | None) -> RetryPolicy | None:
    """A rule's ``retries`` as a policy (no ``retries``: Istio's default)."""
    if spec is None:
        return DEFAULT_RETRY
    return RetryPolicy.build(
        spec.attempts,
        spec.retry_on,
        spec.per_try_timeout,
        spec.backoff,
        spec.retry_ignore_previous_hosts,
    )


def fault_policy(spec: HTTPFaultInjection | None) -> FaultPolicy | None:
    if spec is None:
        return None
    delay, delay_percent = 0.0, 0.0
    if spec.delay is not None:
        delay = spec.delay.fixed_delay
        if spec.delay.percentage is not None:
            delay_percent = spec.delay.percentage.value
        elif spec.delay.percent is not None:
            delay_percent = float(spec.delay.percent)
    status, grpc, abort_percent = None, None, 0.0
    if spec.abort is not None:
        status = spec.abort.http_status
        grpc = GRPC_CODES[spec.abort.grpc_status] if spec.abort.grpc_status else None
        abort_percent = spec.abort.percentage.value if spec.abort.percentage else 0.0
    return FaultPolicy(delay, delay_percent, status, grpc, abort_percent)


def _action(
    rule: HTTPRouteRule, match: HTTPMatchRequest, vs: VirtualService, port: int, ctx: CompileContext
) -> RouteAction:
    backends = []
    for dest, weight in zip(rule.route, _weights(rule), strict=True):
        weighted = _destination(dest.destination, weight, vs, port, ctx)
        backends.append(
            WeightedBackend(
                weighted.backend,
                weighted.weight,
                weighted.error_status,
                weighted.error_reason,
                _ops(dest.headers.request),
                _ops(dest.headers.response),
            )
        )
    redirect = None
    if rule.redirect is not None:
        r = rule.redirect
        redirect = IstioRedirect(
            r.uri, r.authority, r.port, r.derive_port, r.scheme, r.redirect_code
        )
    return RouteAction(
        vs_key(vs),
        tuple(backends),
        request_headers=_ops(rule.headers.request),
        response_headers=_ops(rule.headers.response),
        mirrors=_mirrors(rule, vs, port, ctx),
        timeout=rule.timeout or None,
        retry=retry_policy(rule.retries),
        fault=fault_policy(rule.fault),
        redirect=redirect,
        rewrite=_rewrite(rule, match),
        response=_direct(rule),
        no_backend_status=503,
    )


def compile_virtual_service(vs: VirtualService, port: int, ctx: CompileContext) -> list[Entry]:
    """The entries of ``vs`` for requests to service port ``port``, in rule order."""
    entries = []
    order = 0
    for rule in vs.spec.http:
        for match in rule.match or (_CATCH_ALL,):
            if match.port is not None and match.port != port:
                continue
            entries.append(Entry((order,), _matcher(match), _action(rule, match, vs, port, ctx)))
            order += 1
    return entries
