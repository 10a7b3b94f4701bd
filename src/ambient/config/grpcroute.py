"""Gateway API ``GRPCRoute`` (``gateway.networking.k8s.io/v1``): types and schema.

As for HTTPRoute (``config.httproute``, whose parent refs, header matches,
header modifiers, mirrors and backend refs it shares), the schema enforces
what the CRD and its CEL rules do, each problem with its field path:

- a method match names a ``service`` or a ``method`` (or both); with ``type:
  Exact`` (the default) the service is a dotted name (``^\\.?[a-z_][a-z_0-9]*
  (\\.[a-z_][a-z_0-9]*)*$``, any case) and the method an identifier
  (``^[A-Za-z_][A-Za-z_0-9]*$``), with ``RegularExpression`` both are RE2;
  at most 1024 characters each;
- header names are valid and unique per match (case-insensitively); values
  1..4096 characters; RE2 when ``RegularExpression``;
- filter types ``RequestHeaderModifier``, ``ResponseHeaderModifier`` (each
  at most once per rule), ``RequestMirror``; ``ExtensionRef`` and
  ``sessionPersistence`` are refused ("not supported", as for HTTPRoute);
  exactly the field of the filter's type is set;
- at most 16 rules, 64 matches per rule and 128 in all, 16 backendRefs and
  16 filters per rule, 16 headers per match; weights 0..1,000,000; a port on
  every Service backendRef; rule names unique.

Decisions: ``hostnames`` is accepted and ignored, as for HTTPRoute (a mesh
route applies to its parent Service whatever the ``:authority``); a
backendRef's filters may only modify headers, as for HTTPRoute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ambient.config import rules
from ambient.config.httproute import (
    HEADER_MATCH,
    HEADER_MODIFIER,
    MIRROR,
    NAME,
    PARENT_REF,
    UNSUPPORTED_FILTERS,
    BackendRef,
    Filter,
    HeaderMatch,
    ParentRef,
    check_filter,
    check_filters,
    check_service_ref,
    unique_names,
)
from ambient.config.l7fields import FilterType, Ignored, MatchList, Regex
from ambient.config.meta import PORT, resource_schema
from ambient.config.resources import ObjectMeta
from ambient.config.schema import Choice, FieldPath, Int, ListOf, Obj, Report, Str, req

__all__ = [
    "GRPCROUTE",
    "GRPCRoute",
    "GRPCRouteMatch",
    "GRPCRouteRule",
    "GRPCRouteSpec",
    "MethodMatch",
]

_SERVICE = re.compile(r"\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*", re.IGNORECASE)
_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_FILTER_TYPES = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")
MAX_RULES, MAX_MATCHES, MAX_ALL_MATCHES, MAX_LIST = 16, 64, 128, 16


@dataclass(frozen=True)
class MethodMatch:
    type: str = "Exact"  # Exact | RegularExpression
    service: str | None = None
    method: str | None = None


@dataclass(frozen=True)
class GRPCRouteMatch:
    """One ``matches[]`` entry: the method and every header must match."""

    method: MethodMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class GRPCRouteRule:
    name: str | None = None
    matches: tuple[GRPCRouteMatch, ...] = (GRPCRouteMatch(),)
    filters: tuple[Filter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()


@dataclass(frozen=True)
class GRPCRouteSpec:
    parent_refs: tuple[ParentRef, ...] = ()
    hostnames: object = None
    rules: tuple[GRPCRouteRule, ...] = (GRPCRouteRule(),)


@dataclass(frozen=True)
class GRPCRoute:
    meta: ObjectMeta
    api_version: str
    spec: GRPCRouteSpec = GRPCRouteSpec()
    kind: str = field(default="GRPCRoute", init=False)


# --- checks ------------------------------------------------------------------------------


def _check_method(match: MethodMatch, at: FieldPath, report: Report) -> None:
    if not match.service and not match.method:
        report.error(at, "one or both of 'service' or 'method' must be specified")
        return
    for key, value, pattern, what in (
        ("service", match.service, _SERVICE, r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$"),
        ("method", match.method, _METHOD, r"^[A-Za-z_][A-Za-z_0-9]*$"),
    ):
        if value is None:
            continue
        if len(value) > 1024:
            report.error((*at, key), "longer than 1024 characters")
        elif match.type == "RegularExpression":
            Regex().parse(value, (*at, key), report)
        elif not pattern.fullmatch(value):
            report.error((*at, key), f"{value!r} must only contain valid characters ({what})")


def _check_header(header: HeaderMatch, at: FieldPath, report: Report) -> None:
    if not 1 <= len(header.value) <= 4096:
        report.error((*at, "value"), "must be 1 to 4096 characters long")


def _check_match(match: GRPCRouteMatch, at: FieldPath, report: Report) -> None:
    unique_names(match.headers, (*at, "headers"), report, fold_case=True)
    if len(match.headers) > MAX_LIST:
        report.error((*at, "headers"), f"at most {MAX_LIST} headers")
    for index, header in enumerate(match.headers):
        _check_header(header, (*at, "headers", index), report)


def _check_rule(rule: GRPCRouteRule, at: FieldPath, report: Report) -> None:
    check_filters(rule.filters, (*at, "filters"), report)
    if len(rule.matches) > MAX_MATCHES:
        report.error((*at, "matches"), f"at most {MAX_MATCHES} matches")
    for key, items in (("filters", rule.filters), ("backendRefs", rule.backend_refs)):
        if len(items) > MAX_LIST:
            report.error((*at, key), f"at most {MAX_LIST} entries")
    for index, ref in enumerate(rule.backend_refs):
        check_filters(ref.filters, (*at, "backendRefs", index, "filters"), report)
        for f_index, flt in enumerate(ref.filters):
            if flt.type not in ("RequestHeaderModifier", "ResponseHeaderModifier"):
                report.error(
                    (*at, "backendRefs", index, "filters", f_index, "type"),
                    "not supported on a backendRef: only RequestHeaderModifier and "
                    "ResponseHeaderModifier (put it on the rule)",
                )


def _check_spec(spec: GRPCRouteSpec, at: FieldPath, report: Report) -> None:
    if len(spec.rules) > MAX_RULES:
        report.error((*at, "rules"), f"at most {MAX_RULES} rules")
    total = sum(len(rule.matches) for rule in spec.rules)
    if total > MAX_ALL_MATCHES:
        report.error(
            (*at, "rules"),
            f"{total} matches across the rules: the total must be at most {MAX_ALL_MATCHES}",
        )
    seen: dict[str, int] = {}
    for index, rule in enumerate(spec.rules):
        if rule.name is not None:
            if rule.name in seen:
                report.error(
                    (*at, "rules", index, "name"),
                    f"rule name {rule.name!r} is not unique (see [{seen[rule.name]}])",
                )
            seen.setdefault(rule.name, index)


# --- schema ------------------------------------------------------------------------------

_UNSUPPORTED = {"ExtensionRef": UNSUPPORTED_FILTERS["ExtensionRef"]}
_FILTER = Obj(
    Filter,
    {
        "type": req(FilterType(_FILTER_TYPES, _UNSUPPORTED)),
        "requestHeaderModifier": HEADER_MODIFIER,
        "responseHeaderModifier": HEADER_MODIFIER,
        "requestMirror": MIRROR,
    },
    unsupported={"extensionRef": _UNSUPPORTED["ExtensionRef"]},
    checks=[check_filter],
)
_METHOD_MATCH = Obj(
    MethodMatch,
    {
        "type": Choice("Exact", "RegularExpression"),
        "service": Str(),
        "method": Str(),
    },
    checks=[_check_method],
)
_MATCH = Obj(
    GRPCRouteMatch,
    {"method": _METHOD_MATCH, "headers": ListOf(HEADER_MATCH)},
    checks=[_check_match],
)
_BACKEND_REF = Obj(
    BackendRef,
    {
        "name": req(NAME),
        "group": Str(),
        "kind": Str(),
        "namespace": Str(rules.dns1123_label),
        "port": PORT,
        "weight": Int(0, 1_000_000),
        "filters": ListOf(_FILTER),
    },
    checks=[check_service_ref],
)
_RULE = Obj(
    GRPCRouteRule,
    {
        "name": Str(rules.dns1123_label),
        "matches": MatchList(_MATCH, GRPCRouteMatch()),
        "filters": ListOf(_FILTER),
        "backendRefs": ListOf(_BACKEND_REF),
    },
    unsupported={
        "sessionPersistence": "session persistence is not implemented by the waypoint",
    },
    checks=[_check_rule],
)
GRPCROUTE_SPEC = Obj(
    GRPCRouteSpec,
    {
        "parentRefs": ListOf(PARENT_REF),
        "hostnames": Ignored("a mesh route applies to its parent Service whatever the authority"),
        "rules": ListOf(_RULE),
    },
    checks=[_check_spec],
)
GRPCROUTE = resource_schema(GRPCRoute, GRPCROUTE_SPEC, spec_required=True)
