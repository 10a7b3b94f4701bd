"""Gateway API ``HTTPRoute`` (``gateway.networking.k8s.io/v1`` and ``v1beta1``): types and schema.

The schema enforces what the Gateway API CRDs and their CEL rules enforce, so
a route Kubernetes would refuse is refused at load with its field path:
path values (absolute, no ``//``, ``/./``, ``/../``, ``%2f``, ``#``), RE2
regexes, header names, unique header/query names per match, weights
0..1,000,000, redirect codes 301/302/303/307/308, one filter field per
filter type, ``RequestRedirect`` not with ``URLRewrite`` nor with
``backendRefs``, ``ReplacePrefixMatch`` only under exactly one ``PathPrefix``
match, a ``port`` on every Service backendRef.

Decisions:

- ``ExtensionRef``, ``CORS`` and ``ExternalAuth`` filters and
  ``sessionPersistence`` are refused ("not supported"): the waypoint cannot
  honour them and the spec forbids skipping a filter silently.
- ``retry`` (GEP-1731, experimental channel since v1.2: ``codes`` 400..599,
  ``attempts``, ``backoff``) is applied as Istio translates it: retry on
  connection failures and the listed codes, ``attempts`` default 2.
  ``timeouts.backendRequest`` is the per-try timeout when the rule retries,
  else the request's timeout (``gateway``).
- ``hostnames`` is accepted with a warning and ignored: a mesh (GAMMA) route
  applies to the Service its parentRef names, whatever the Host header says
  (conformance ``MeshFrontendHostname``).
- What needs other objects (a backendRef to a Service that does not exist, in
  another namespace without a ReferenceGrant) is not a load error: those
  backends answer 500 and the route reports ``ResolvedRefs=False`` (``table``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ambient.config import rules
from ambient.config.l7fields import (
    HTTP_METHODS,
    REDIRECT_CODES,
    FilterType,
    GatewayDuration,
    Ignored,
    IntChoice,
    MatchList,
    Regex,
    header_name,
)
from ambient.config.meta import PORT, resource_schema
from ambient.config.resources import ObjectMeta
from ambient.config.schema import (
    Choice,
    FieldPath,
    Int,
    ListOf,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "HTTPROUTE",
    "BackendRef",
    "Filter",
    "HTTPHeader",
    "HTTPRoute",
    "HTTPRouteSpec",
    "HeaderMatch",
    "HeaderModifier",
    "Match",
    "Mirror",
    "ParentRef",
    "PathMatch",
    "PathModifier",
    "QueryParamMatch",
    "Redirect",
    "Rule",
    "Timeouts",
    "URLRewrite",
]

GATEWAY_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class ParentRef:
    name: str
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    section_name: str | None = None
    port: int | None = None

    @property
    def is_service(self) -> bool:
        """A GAMMA (mesh) parent: a core Service."""
        return self.kind == "Service" and self.group in ("", "core")


@dataclass(frozen=True)
class PathMatch:
    type: str = "PathPrefix"  # Exact | PathPrefix | RegularExpression
    value: str = "/"


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str
    type: str = "Exact"  # Exact | RegularExpression


@dataclass(frozen=True)
class QueryParamMatch:
    name: str
    value: str
    type: str = "Exact"


@dataclass(frozen=True)
class Match:
    """One ``matches[]`` entry: every condition must hold."""

    path: PathMatch = PathMatch()
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class HTTPHeader:
    name: str
    value: str


@dataclass(frozen=True)
class HeaderModifier:
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class PathModifier:
    type: str  # ReplaceFullPath | ReplacePrefixMatch
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


@dataclass(frozen=True)
class Redirect:
    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True)
class ServiceRef:
    """A backendRef without weight or filters (a mirror's target)."""

    name: str
    group: str = ""
    kind: str = "Service"
    namespace: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class Fraction:
    numerator: int
    denominator: int = 100


@dataclass(frozen=True)
class Mirror:
    backend_ref: ServiceRef
    percent: int | None = None
    fraction: Fraction | None = None

    @property
    def share(self) -> float:
        """The percentage of requests mirrored (100 when neither field is set)."""
        if self.percent is not None:
            return float(self.percent)
        if self.fraction is not None:
            return 100.0 * self.fraction.numerator / self.fraction.denominator
        return 100.0


@dataclass(frozen=True)
class Filter:
    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: Redirect | None = None
    url_rewrite: URLRewrite | None = None
    request_mirror: Mirror | None = None


@dataclass(frozen=True)
class BackendRef:
    name: str
    group: str = ""
    kind: str = "Service"
    namespace: str | None = None
    port: int | None = None
    weight: int = 1
    filters: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class Timeouts:
    request: float | None = None
    backend_request: float | None = None


@dataclass(frozen=True)
class Retry:
    codes: tuple[int, ...] = ()
    attempts: int | None = None
    backoff: float | None = None


@dataclass(frozen=True)
class Rule:
    name: str | None = None
    matches: tuple[Match, ...] = (Match(),)
    filters: tuple[Filter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    timeouts: Timeouts = Timeouts()
    retry: Retry | None = None


@dataclass(frozen=True)
class HTTPRouteSpec:
    parent_refs: tuple[ParentRef, ...] = ()
    hostnames: object = None
    rules: tuple[Rule, ...] = (Rule(),)


@dataclass(frozen=True)
class HTTPRoute:
    meta: ObjectMeta
    api_version: str
    spec: HTTPRouteSpec = HTTPRouteSpec()
    kind: str = field(default="HTTPRoute", init=False)


# --- checks ------------------------------------------------------------------------------


def _path_value(value: str) -> str | None:
    if not value.startswith("/"):
        return f"must be an absolute path starting with '/', got {value!r}"
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            return f"must not contain {bad!r}, got {value!r}"
    if value.endswith(("/..", "/.")):
        return f"must not end with '/.' or '/..', got {value!r}"
    return None


def _check_path(match: PathMatch, at: FieldPath, report: Report) -> None:
    if match.type == "RegularExpression":
        Regex().parse(match.value, (*at, "value"), report)
        return
    problem = _path_value(match.value)
    if problem is not None:
        report.error((*at, "value"), problem)


def _unique_names(
    items: Sequence[HeaderMatch | QueryParamMatch | HTTPHeader],
    at: FieldPath,
    report: Report,
    *,
    fold_case: bool,
) -> None:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        key = item.name.lower() if fold_case else item.name
        if key in seen:
            report.error((*at, index, "name"), f"duplicate name {item.name!r} (see [{seen[key]}])")
        seen.setdefault(key, index)


def _check_match(match: Match, at: FieldPath, report: Report) -> None:
    _unique_names(match.headers, (*at, "headers"), report, fold_case=True)
    _unique_names(match.query_params, (*at, "queryParams"), report, fold_case=False)


def _check_regex_value(match: HeaderMatch | QueryParamMatch, at: FieldPath, report: Report) -> None:
    if match.type == "RegularExpression":
        Regex().parse(match.value, (*at, "value"), report)


def _check_modifier(mod: HeaderModifier, at: FieldPath, report: Report) -> None:
    _unique_names(mod.set, (*at, "set"), report, fold_case=True)
    _unique_names(mod.add, (*at, "add"), report, fold_case=True)
    lowered = [name.lower() for name in mod.remove]
    for index, name in enumerate(lowered):
        if name in lowered[:index]:
            report.error((*at, "remove", index), f"duplicate header {mod.remove[index]!r}")


def _check_path_modifier(mod: PathModifier, at: FieldPath, report: Report) -> None:
    wanted = "replaceFullPath" if mod.type == "ReplaceFullPath" else "replacePrefixMatch"
    value = mod.replace_full_path if mod.type == "ReplaceFullPath" else mod.replace_prefix_match
    other = mod.replace_prefix_match if mod.type == "ReplaceFullPath" else mod.replace_full_path
    if value is None:
        report.error((*at, wanted), f"required when type is {mod.type}")
    if other is not None:
        unwanted = "replacePrefixMatch" if wanted == "replaceFullPath" else "replaceFullPath"
        report.error((*at, unwanted), f"must not be set when type is {mod.type}")
    if value:
        problem = _path_value(value)
        if problem is not None:
            report.error((*at, wanted), problem)


_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
}


def _check_filter(flt: Filter, at: FieldPath, report: Report) -> None:
    present = {
        "requestHeaderModifier": flt.request_header_modifier,
        "responseHeaderModifier": flt.response_header_modifier,
        "requestRedirect": flt.request_redirect,
        "urlRewrite": flt.url_rewrite,
        "requestMirror": flt.request_mirror,
    }
    wanted = _FILTER_FIELDS[flt.type]
    if present[wanted] is None:
        report.error((*at, wanted), f"required when type is {flt.type}")
    for key, value in present.items():
        if key != wanted and value is not None:
            report.error((*at, key), f"must not be set when type is {flt.type}")


def _check_mirror(mirror: Mirror, at: FieldPath, report: Report) -> None:
    if mirror.percent is not None and mirror.fraction is not None:
        report.error((*at, "fraction"), "set percent or fraction, not both")
    if mirror.fraction is not None and mirror.fraction.numerator > mirror.fraction.denominator:
        report.error((*at, "fraction", "numerator"), "must not exceed the denominator")


def _check_service_ref(ref: ServiceRef | BackendRef, at: FieldPath, report: Report) -> None:
    if ref.kind == "Service" and ref.group in ("", "core") and ref.port is None:
        report.error((*at, "port"), "required when referring to a Service")


def _check_filters(filters: tuple[Filter, ...], at: FieldPath, report: Report) -> None:
    seen: dict[str, int] = {}
    for index, flt in enumerate(filters):
        if flt.type != "RequestMirror" and flt.type in seen:
            report.error(
                (*at, index, "type"), f"{flt.type} may appear once (see [{seen[flt.type]}])"
            )
        seen.setdefault(flt.type, index)
    if "RequestRedirect" in seen and "URLRewrite" in seen:
        report.error((*at, seen["URLRewrite"]), "RequestRedirect and URLRewrite cannot be combined")


def _prefix_paths(filters: tuple[Filter, ...]) -> list[int]:
    """Indexes of filters that replace a prefix match."""
    out = []
    for index, flt in enumerate(filters):
        target = flt.request_redirect or flt.url_rewrite
        if target and target.path and target.path.type == "ReplacePrefixMatch":
            out.append(index)
    return out


def _check_rule(rule: Rule, at: FieldPath, report: Report) -> None:
    _check_filters(rule.filters, (*at, "filters"), report)
    if rule.backend_refs and any(f.type == "RequestRedirect" for f in rule.filters):
        report.error((*at, "backendRefs"), "must be empty when a RequestRedirect filter is used")
    prefix_only = len(rule.matches) == 1 and rule.matches[0].path.type == "PathPrefix"
    for index in _prefix_paths(rule.filters):
        if not prefix_only:
            report.error(
                (*at, "filters", index),
                "ReplacePrefixMatch needs exactly one match, with a PathPrefix path",
            )
    for index, ref in enumerate(rule.backend_refs):
        _check_filters(ref.filters, (*at, "backendRefs", index, "filters"), report)
        for f_index, flt in enumerate(ref.filters):
            if flt.type not in ("RequestHeaderModifier", "ResponseHeaderModifier"):
                report.error(
                    (*at, "backendRefs", index, "filters", f_index, "type"),
                    "not supported on a backendRef: only RequestHeaderModifier and "
                    "ResponseHeaderModifier (put it on the rule)",
                )


# --- schema ------------------------------------------------------------------------------

_UNSUPPORTED_FILTERS = {
    "ExtensionRef": "the waypoint has no extension filters",
    "CORS": "CORS is not implemented by the waypoint",
    "ExternalAuth": "external authorization is not implemented by the waypoint",
}


_NAME = Str(rules.dns1123_subdomain)
_HEADER = Obj(HTTPHeader, {"name": req(Str(header_name)), "value": req(Str())})
_MODIFIER = Obj(
    HeaderModifier,
    {
        "set": ListOf(_HEADER),
        "add": ListOf(_HEADER),
        "remove": ListOf(Str(header_name)),
    },
    checks=[_check_modifier],
)
_PATH_MODIFIER = Obj(
    PathModifier,
    {
        "type": req(Choice("ReplaceFullPath", "ReplacePrefixMatch")),
        "replaceFullPath": Str(),
        "replacePrefixMatch": Str(),
    },
    checks=[_check_path_modifier],
)
_SERVICE_REF = Obj(
    ServiceRef,
    {
        "name": req(_NAME),
        "group": Str(),
        "kind": Str(),
        "namespace": Str(rules.dns1123_label),
        "port": PORT,
    },
    checks=[_check_service_ref],
)
_MIRROR = Obj(
    Mirror,
    {
        "backendRef": req(_SERVICE_REF),
        "percent": Int(0, 100),
        "fraction": Obj(Fraction, {"numerator": req(Int(0)), "denominator": Int(1)}),
    },
    checks=[_check_mirror],
)
_REDIRECT = Obj(
    Redirect,
    {
        "scheme": Choice("http", "https"),
        "hostname": Str(rules.hostname),
        "path": _PATH_MODIFIER,
        "port": PORT,
        "statusCode": IntChoice(REDIRECT_CODES),
    },
)
_FILTER = Obj(
    Filter,
    {
        "type": req(FilterType(tuple(_FILTER_FIELDS), _UNSUPPORTED_FILTERS)),
        "requestHeaderModifier": _MODIFIER,
        "responseHeaderModifier": _MODIFIER,
        "requestRedirect": _REDIRECT,
        "urlRewrite": Obj(URLRewrite, {"hostname": Str(rules.hostname), "path": _PATH_MODIFIER}),
        "requestMirror": _MIRROR,
    },
    unsupported={
        "extensionRef": _UNSUPPORTED_FILTERS["ExtensionRef"],
        "cors": _UNSUPPORTED_FILTERS["CORS"],
        "externalAuth": _UNSUPPORTED_FILTERS["ExternalAuth"],
    },
    checks=[_check_filter],
)
_PATH_MATCH = Obj(
    PathMatch,
    {
        "type": Choice("Exact", "PathPrefix", "RegularExpression"),
        "value": Str(),
    },
    checks=[_check_path],
)
_HEADER_MATCH = Obj(
    HeaderMatch,
    {
        "name": req(Str(header_name)),
        "value": req(Str()),
        "type": Choice("Exact", "RegularExpression"),
    },
    checks=[_check_regex_value],
)
_QUERY_MATCH = Obj(
    QueryParamMatch,
    {
        "name": req(Str(rules.not_empty)),
        "value": req(Str()),
        "type": Choice("Exact", "RegularExpression"),
    },
    checks=[_check_regex_value],
)
_MATCH = Obj(
    Match,
    {
        "path": _PATH_MATCH,
        "headers": ListOf(_HEADER_MATCH),
        "queryParams": ListOf(_QUERY_MATCH),
        "method": Choice(*HTTP_METHODS),
    },
    checks=[_check_match],
)
_BACKEND_REF = Obj(
    BackendRef,
    {
        "name": req(_NAME),
        "group": Str(),
        "kind": Str(),
        "namespace": Str(rules.dns1123_label),
        "port": PORT,
        "weight": Int(0, 1_000_000),
        "filters": ListOf(_FILTER),
    },
    checks=[_check_service_ref],
)
_RULE = Obj(
    Rule,
    {
        "name": Str(rules.dns1123_label),
        "matches": MatchList(_MATCH, Match()),
        "filters": ListOf(_FILTER),
        "backendRefs": ListOf(_BACKEND_REF),
        "timeouts": Obj(
            Timeouts, {"request": GatewayDuration(), "backendRequest": GatewayDuration()}
        ),
        "retry": Obj(
            Retry,
            {
                "codes": ListOf(Int(400, 599)),
                "attempts": Int(0),
                "backoff": GatewayDuration(),
            },
        ),
    },
    unsupported={
        "sessionPersistence": "session persistence is not implemented by the waypoint",
    },
    checks=[_check_rule],
)
_PARENT_REF = Obj(
    ParentRef,
    {
        "name": req(_NAME),
        "group": Str(),
        "kind": Str(),
        "namespace": Str(rules.dns1123_label),
        "sectionName": Str(rules.dns1123_subdomain),
        "port": PORT,
    },
)
HTTPROUTE_SPEC = Obj(
    HTTPRouteSpec,
    {
        "parentRefs": ListOf(_PARENT_REF),
        "hostnames": Ignored("a mesh route applies to its parent Service whatever the Host"),
        "rules": ListOf(_RULE),
    },
)
HTTPROUTE = resource_schema(HTTPRoute, HTTPROUTE_SPEC, spec_required=True)


# --- shared with GRPCRoute (config.grpcroute) ---------------------------------------------

NAME = _NAME
HEADER_MATCH = _HEADER_MATCH
HEADER_MODIFIER = _MODIFIER
MIRROR = _MIRROR
PARENT_REF = _PARENT_REF
UNSUPPORTED_FILTERS = _UNSUPPORTED_FILTERS
check_filter = _check_filter
check_filters = _check_filters
check_service_ref = _check_service_ref
unique_names = _unique_names
