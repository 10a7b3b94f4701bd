"""Istio ``VirtualService`` (``networking.istio.io/v1``, ``v1beta1``, ``v1alpha3``): types and schema.

Only ``http`` routes matter at a waypoint. Validation follows Istio's webhook:
a ``StringMatch`` has exactly one of ``exact``/``prefix``/``regex`` (RE2),
``redirect`` excludes ``route``, ``rewrite`` and ``directResponse``; weights
are non-negative integers (relative, need not sum to 100); redirect codes
are 301/302/303/307/308; ``mirrorPercentage`` is 0..100.

Decisions:

- ``retries`` and ``fault`` are applied (``ambient.waypoint.resilience``), validated as
  Istio's webhook does: ``attempts`` >= 0, ``retryOn`` a comma list of Envoy
  conditions and HTTP status codes, durations of at least 1ms, a fault with a
  delay and/or an abort, an abort with one of ``httpStatus`` (200..599) or
  ``grpcStatus``, percentages 0..100. ``retries`` with ``attempts: 0`` and
  other fields, and a fault without ``percentage`` (which affects no request,
  as in Istio), load with a warning. ``retryRemoteLocalities`` is accepted and
  has no effect (one locality); ``exponentialDelay`` and ``http2Error`` are
  refused (Istio does not implement them either).
- Parsed and **ignored with a load warning**: ``corsPolicy`` (the waypoint
  does not answer CORS yet), ``tcp`` and ``tls`` routes (the waypoint routes
  HTTP only), and ``exportTo``.
- **Refused** ("not supported"): ``delegate``, and the match conditions that
  depend on the caller (``sourceLabels``, ``sourceNamespace``, ``gateways``):
  ignoring a condition would route more traffic than the author meant.
- A header or query ``StringMatch`` that is empty (``{}``) means "present", as
  in Istio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ambient.config import rules
from ambient.config.frozen import FrozenMap
from ambient.config.l7fields import (
    GRPC_CODES,
    REDIRECT_CODES,
    GoDuration,
    Ignored,
    IntChoice,
    Regex,
    header_name,
    parse_retry_on,
)
from ambient.config.meta import PORT, resource_schema
from ambient.config.regex import compile_re2
from ambient.config.resources import ObjectMeta
from ambient.config.schema import (
    INVALID,
    Bool,
    Choice,
    FieldPath,
    Int,
    Invalid,
    ListOf,
    MapOf,
    Node,
    Obj,
    Report,
    Str,
    req,
    show,
)

__all__ = [
    "VIRTUAL_SERVICE",
    "Destination",
    "DirectResponseSpec",
    "FaultAbort",
    "FaultDelay",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRouteDestination",
    "HTTPRouteRule",
    "HeaderOperations",
    "Headers",
    "MirrorPolicy",
    "StringMatch",
    "VirtualService",
    "VirtualServiceSpec",
]


@dataclass(frozen=True)
class StringMatch:
    """Exactly one of exact/prefix/regex, or none (header/query: "present")."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


@dataclass(frozen=True)
class HTTPMatchRequest:
    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: FrozenMap[str, StringMatch] = field(default_factory=FrozenMap)
    without_headers: FrozenMap[str, StringMatch] = field(default_factory=FrozenMap)
    query_params: FrozenMap[str, StringMatch] = field(default_factory=FrozenMap)
    port: int | None = None
    ignore_uri_case: bool = False


@dataclass(frozen=True)
class PortSelector:
    number: int


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str | None = None
    port: PortSelector | None = None


@dataclass(frozen=True)
class HeaderOperations:
    set: FrozenMap[str, str] = field(default_factory=FrozenMap)
    add: FrozenMap[str, str] = field(default_factory=FrozenMap)
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True)
class HTTPRouteDestination:
    destination: Destination
    weight: int | None = None
    headers: Headers = Headers()


@dataclass(frozen=True)
class HTTPRedirect:
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: str | None = None  # FROM_PROTOCOL_DEFAULT | FROM_REQUEST_PORT
    scheme: str | None = None
    redirect_code: int = 301


@dataclass(frozen=True)
class RegexRewrite:
    match: str
    rewrite: str


@dataclass(frozen=True)
class HTTPRewrite:
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


@dataclass(frozen=True)
class Percent:
    value: float = 100.0


@dataclass(frozen=True)
class MirrorPolicy:
    destination: Destination
    percentage: Percent | None = None


@dataclass(frozen=True)
class Body:
    string: str | None = None
    bytes: str | None = None  # base64


@dataclass(frozen=True)
class DirectResponseSpec:
    status: int
    body: Body | None = None


@dataclass(frozen=True)
class HTTPRetry:
    attempts: int = 0
    per_try_timeout: float | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: float | None = None


@dataclass(frozen=True)
class FaultDelay:
    fixed_delay: float
    percentage: Percent | None = None
    percent: int | None = None  # deprecated integer form


@dataclass(frozen=True)
class FaultAbort:
    http_status: int | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None


@dataclass(frozen=True)
class HTTPFaultInjection:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True)
class HTTPRouteRule:
    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: DirectResponseSpec | None = None
    rewrite: HTTPRewrite | None = None
    timeout: float | None = None
    headers: Headers = Headers()
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    mirrors: tuple[MirrorPolicy, ...] = ()
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    cors_policy: object = None


@dataclass(frozen=True)
class VirtualServiceSpec:
    hosts: tuple[str, ...]
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRouteRule, ...] = ()
    tcp: object = None
    tls: object = None
    export_to: object = None


@dataclass(frozen=True)
class VirtualService:
    meta: ObjectMeta
    api_version: str
    spec: VirtualServiceSpec
    kind: str = field(default="VirtualService", init=False)


# --- checks ------------------------------------------------------------------------------


def _check_string_match(match: StringMatch, at: FieldPath, report: Report) -> None:
    given = [
        k
        for k, v in (("exact", match.exact), ("prefix", match.prefix), ("regex", match.regex))
        if v is not None
    ]
    if len(given) > 1:
        report.error((*at, given[1]), f"set only one of exact, prefix, regex (also {given[0]})")
    if match.regex is not None:
        Regex().parse(match.regex, (*at, "regex"), report)


def _check_uri_match(match: StringMatch, at: FieldPath, report: Report) -> None:
    if match.exact is None and match.prefix is None and match.regex is None:
        report.error(at, "set one of exact, prefix, regex")


def _check_rule(rule: HTTPRouteRule, at: FieldPath, report: Report) -> None:
    if rule.redirect is not None:
        for key, value in (
            ("route", rule.route),
            ("rewrite", rule.rewrite),
            ("directResponse", rule.direct_response),
        ):
            if value:
                report.error((*at, key), "cannot be combined with redirect")
    elif rule.direct_response is not None:
        for key, value in (("route", rule.route), ("rewrite", rule.rewrite)):
            if value:
                report.error((*at, key), "cannot be combined with directResponse")
    elif not rule.route:
        report.error((*at, "route"), "required unless redirect or directResponse is set")
    if rule.rewrite is not None and rule.rewrite.uri and rule.rewrite.uri_regex_rewrite:
        report.error((*at, "rewrite", "uriRegexRewrite"), "cannot be combined with rewrite.uri")
    if rule.mirror is not None and rule.mirrors:
        report.error((*at, "mirrors"), "cannot be combined with mirror")
    for index, match in enumerate(rule.match):
        if match.uri is not None:
            _check_uri_match(match.uri, (*at, "match", index, "uri"), report)


def _check_regex_rewrite(rewrite: RegexRewrite, at: FieldPath, report: Report) -> None:
    if Regex().parse(rewrite.match, (*at, "match"), report) is INVALID:
        return
    pattern = compile_re2(rewrite.match)
    for ref in re.findall(r"\\(\d+)", rewrite.rewrite):
        if int(ref) > pattern.groups:
            report.error(
                (*at, "rewrite"),
                f"refers to group \\{ref} but the match has {pattern.groups} group(s)",
            )


def _vs_host(value: str) -> str | None:
    """A VirtualService host: a (short or full) service name, ``*.suffix``, or ``*``."""
    return None if value == "*" else rules.hostname(value)


class PercentValue(Node[float]):
    """A percentage 0..100 (an integer or a decimal number)."""

    expected = "a number between 0 and 100"

    def parse(self, value: object, at: FieldPath, report: Report) -> float | Invalid:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            report.error(at, f"expected {self.expected}, got {show(value)}")
            return INVALID
        return float(value)


def _check_direct_response(response: DirectResponseSpec, at: FieldPath, report: Report) -> None:
    if (
        response.body is not None
        and response.body.string is not None
        and response.body.bytes is not None
    ):
        report.error((*at, "body"), "set string or bytes, not both")


def _check_retry(retry: HTTPRetry, at: FieldPath, report: Report) -> None:
    if retry.retry_on is not None:
        for problem in parse_retry_on(retry.retry_on)[2]:
            report.error((*at, "retryOn"), problem)
    if retry.attempts == 0 and (
        retry.per_try_timeout is not None or retry.retry_on is not None or retry.backoff is not None
    ):
        report.warn(at, "retries are disabled by attempts: 0; the other retry fields do nothing")
    if retry.retry_remote_localities:
        report.warn((*at, "retryRemoteLocalities"), "has no effect: there is one locality")


def _check_fault(fault: HTTPFaultInjection, at: FieldPath, report: Report) -> None:
    if fault.delay is None and fault.abort is None:
        report.error(at, "set delay, abort or both")
        return
    if fault.delay is not None and fault.delay.percentage is None and not fault.delay.percent:
        report.warn((*at, "delay"), "no percentage: no request will be delayed (as in Istio)")
    if fault.abort is not None and fault.abort.percentage is None:
        report.warn((*at, "abort"), "no percentage: no request will be aborted (as in Istio)")


def _check_abort(abort: FaultAbort, at: FieldPath, report: Report) -> None:
    if (abort.http_status is None) == (abort.grpc_status is None):
        report.error(at, "set exactly one of httpStatus, grpcStatus")


# --- schema ------------------------------------------------------------------------------

_CALLER_DEPENDENT = "the waypoint routes without the caller's labels or namespace"
_STRING_MATCH = Obj(
    StringMatch,
    {"exact": Str(), "prefix": Str(), "regex": Str()},
    checks=[_check_string_match],
)
_MATCH = Obj(
    HTTPMatchRequest,
    {
        "name": Str(),
        "uri": _STRING_MATCH,
        "scheme": _STRING_MATCH,
        "method": _STRING_MATCH,
        "authority": _STRING_MATCH,
        "headers": MapOf(_STRING_MATCH, header_name),
        "withoutHeaders": MapOf(_STRING_MATCH, header_name),
        "queryParams": MapOf(_STRING_MATCH, rules.not_empty),
        "port": PORT,
        "ignoreUriCase": Bool(),
    },
    unsupported={
        "sourceLabels": _CALLER_DEPENDENT,
        "sourceNamespace": _CALLER_DEPENDENT,
        "gateways": "per-match gateways do not apply at a waypoint",
        "statPrefix": "the waypoint has no per-route stats",
    },
)
_DESTINATION = Obj(
    Destination,
    {
        "host": req(Str(rules.hostname)),
        "subset": Str(rules.not_empty),
        "port": Obj(PortSelector, {"number": req(PORT)}),
    },
)
_HEADER_OPS = Obj(
    HeaderOperations,
    {
        "set": MapOf(Str(), header_name),
        "add": MapOf(Str(), header_name),
        "remove": ListOf(Str(header_name)),
    },
)
_HEADERS = Obj(Headers, {"request": _HEADER_OPS, "response": _HEADER_OPS})
_PERCENT = Obj(Percent, {"value": PercentValue()})
_RETRY = Obj(
    HTTPRetry,
    {
        "attempts": Int(0),
        "perTryTimeout": GoDuration(allow_zero=False),
        "retryOn": Str(),
        "retryRemoteLocalities": Bool(),
        "retryIgnorePreviousHosts": Bool(),
        "backoff": GoDuration(allow_zero=False),
    },
    checks=[_check_retry],
)
_FAULT = Obj(
    HTTPFaultInjection,
    {
        "delay": Obj(
            FaultDelay,
            {
                "fixedDelay": req(GoDuration(allow_zero=False)),
                "percentage": _PERCENT,
                "percent": Int(0, 100),
            },
            unsupported={"exponentialDelay": "Istio does not implement exponential delays"},
        ),
        "abort": Obj(
            FaultAbort,
            {
                "httpStatus": Int(200, 599),
                "grpcStatus": Choice(*GRPC_CODES),
                "percentage": _PERCENT,
            },
            unsupported={"http2Error": "Istio does not implement HTTP/2 error aborts"},
            checks=[_check_abort],
        ),
    },
    checks=[_check_fault],
)
_RULE = Obj(
    HTTPRouteRule,
    {
        "name": Str(),
        "match": ListOf(_MATCH),
        "route": ListOf(
            Obj(
                HTTPRouteDestination,
                {
                    "destination": req(_DESTINATION),
                    "weight": Int(0),
                    "headers": _HEADERS,
                },
            )
        ),
        "redirect": Obj(
            HTTPRedirect,
            {
                "uri": Str(),
                "authority": Str(rules.not_empty),
                "port": PORT,
                "derivePort": Choice("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"),
                "scheme": Choice("http", "https"),
                "redirectCode": IntChoice(REDIRECT_CODES),
            },
        ),
        "directResponse": Obj(
            DirectResponseSpec,
            {
                "status": req(Int(200, 599)),
                "body": Obj(Body, {"string": Str(), "bytes": Str()}),
            },
            checks=[_check_direct_response],
        ),
        "rewrite": Obj(
            HTTPRewrite,
            {
                "uri": Str(),
                "authority": Str(rules.not_empty),
                "uriRegexRewrite": Obj(
                    RegexRewrite,
                    {"match": req(Str()), "rewrite": req(Str())},
                    checks=[_check_regex_rewrite],
                ),
            },
        ),
        "timeout": GoDuration(),
        "headers": _HEADERS,
        "mirror": _DESTINATION,
        "mirrorPercentage": _PERCENT,
        "mirrors": ListOf(
            Obj(MirrorPolicy, {"destination": req(_DESTINATION), "percentage": _PERCENT})
        ),
        "retries": _RETRY,
        "fault": _FAULT,
        "corsPolicy": Ignored("the waypoint does not answer CORS yet"),
    },
    unsupported={
        "delegate": "delegate VirtualServices apply to ingress gateways only",
        "mirrorPercent": "use mirrorPercentage.value",
    },
    checks=[_check_rule],
)
VIRTUAL_SERVICE_SPEC = Obj(
    VirtualServiceSpec,
    {
        "hosts": req(ListOf(Str(_vs_host), non_empty=True)),
        "gateways": ListOf(Str(rules.not_empty)),
        "http": ListOf(_RULE),
        "tcp": Ignored("the waypoint routes HTTP only; TCP passes through to the service"),
        "tls": Ignored("the waypoint routes HTTP only; TLS passes through to the service"),
        "exportTo": Ignored("every object is visible mesh-wide here"),
    },
)
VIRTUAL_SERVICE = resource_schema(VirtualService, VIRTUAL_SERVICE_SPEC, spec_required=True)
