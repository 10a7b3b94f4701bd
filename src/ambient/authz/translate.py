"""AuthorizationPolicy -> the L4 ``Authorization`` ztunnel enforces.

Follows istiod's ambient translation (istio/istio
``pilot/pkg/serviceregistry/ambient/authorization.go``: ``convertAuthorizationPolicy``,
``handleRule``) and the admission checks of ``pkg/config/validation``
(``ValidateAuthorizationPolicy``), stricter where noted:

- each rule becomes a ``Group`` whose clauses are, in order: one ``Rules`` for ``to``,
  one for ``from`` (each entry a ``Match``, ORed) and one per ``when`` condition;
- attributes ztunnel cannot see (HTTP fields, request principals, remote IPs, L7
  ``when`` keys) drop the whole rule from an ALLOW policy, so it can never allow; in
  a DENY policy they are stripped and the L4 remainder enforced. A stripped entry
  left with no fields is an empty ``Match``, which ztunnel skips: such a DENY rule
  never matches (istiod warns "will have no effect"). Every case yields a warning;
- ``trustDomains``/``notTrustDomains`` have no ztunnel field; istiod silently ignores
  them (which widens an ALLOW). Here they are handled like HTTP attributes instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ambient.authz._spec import (
    PolicyError,
    check_keys,
    check_path_template,
    fail,
    get_list,
    get_mapping,
    get_str,
    mapping,
    parse_ip_block,
    parse_port,
    read_selector,
    str_list,
    type_name,
)
from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    IPNetwork,
    Match,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
)

__all__ = [
    "DRY_RUN_ANNOTATION",
    "L4_WHEN_KEYS",
    "PolicyError",
    "TranslationResult",
    "is_dry_run",
    "translate_authorization_policy",
]

DRY_RUN_ANNOTATION = "istio.io/dry-run"
L4_WHEN_KEYS = frozenset(
    {"source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"}
)

_SPEC_FIELDS = ("selector", "targetRef", "targetRefs", "action", "provider", "rules")
_RULE_FIELDS = ("from", "to", "when")
_SOURCE_L4: tuple[str, ...] = ("principals", "notPrincipals", "namespaces", "notNamespaces")
_SOURCE_L4 += ("ipBlocks", "notIpBlocks", "serviceAccounts", "notServiceAccounts")
_SOURCE_OTHER: tuple[str, ...] = ("requestPrincipals", "notRequestPrincipals", "remoteIpBlocks")
_SOURCE_OTHER += ("notRemoteIpBlocks", "trustDomains", "notTrustDomains")
_OPERATION_L4: tuple[str, ...] = ("ports", "notPorts")
_OPERATION_OTHER = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
_TARGET_REF_FIELDS = ("group", "kind", "name", "namespace")
_ACTIONS = {"ALLOW": Action.ALLOW, "DENY": Action.DENY, "AUDIT": Action.AUDIT, "CUSTOM": None}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_PRINCIPAL_RE = re.compile(r"[^/*]+/ns/[^/*]+/sa/[^/*]+")
_MAP_KEY_RE = re.compile(r"[^\[]+\[.+\]")
_NOT_L4_KEYS: tuple[str, ...] = ("remote.ip", "source.serviceAccount", "source.trustDomain")
_NOT_L4_KEYS += ("connection.sni",)
_NOT_L4_KEYS += ("request.auth.principal", "request.auth.audiences", "request.auth.presenter")
_MAP_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")


@dataclass(frozen=True, slots=True)
class TranslationResult:
    """The translated policy (None when ztunnel does not enforce it) and warnings."""

    policy: Authorization | None
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class _Ctx:
    key: str
    namespace: str
    action: Action | None
    warnings: list[str] = field(default_factory=list)


def translate_authorization_policy(
    name: str,
    namespace: str,
    spec: Mapping[str, object],
    annotations: Mapping[str, object] | None = None,
    *,
    root_namespace: str = "istio-system",
) -> TranslationResult:
    """Validate and translate one AuthorizationPolicy; raise PolicyError if invalid."""
    if not isinstance(name, str) or not name:
        fail("metadata.name", "must be a non-empty string")
    if not isinstance(namespace, str) or not namespace:
        fail("metadata.namespace", "must be a non-empty string")
    spec = mapping(spec, "spec")
    check_keys(spec, _SPEC_FIELDS, "spec")
    dry_run = _dry_run(annotations or {})
    action_name = get_str(spec, "action", "spec")
    action_name = "ALLOW" if action_name is None else action_name
    if action_name not in _ACTIONS:
        fail(
            "spec.action", f"invalid action {action_name!r}; expected one of: {', '.join(_ACTIONS)}"
        )
    ctx = _Ctx(f"{namespace}/{name}", namespace, _ACTIONS[action_name])
    selector = read_selector(spec, "spec")
    has_target = _check_target_refs(spec, selector is not None)
    rules = get_list(spec, "rules", "spec")
    _check_provider(spec, action_name, rules)
    if ctx.action is Action.DENY and not rules:
        fail(
            "spec.rules", "a DENY policy without rules never matches; add `rules: [{}]` to deny all"
        )
    groups: list[Group] = []
    for i, rule in enumerate(rules or []):
        group = _rule(rule, f"spec.rules[{i}]", ctx)
        if group is not None:
            groups.append(group)
    if has_target:
        return _skipped(ctx, "has targetRefs: it is enforced by a waypoint, not ztunnel")
    if ctx.action is None:
        return _skipped(ctx, "ztunnel does not support the CUSTOM action; enforce it at a waypoint")
    if selector == ():
        ctx.warnings.append(f"{ctx.key}: workload selector specified without labels")
    if ctx.action is Action.AUDIT:
        ctx.warnings.append(
            f"{ctx.key}: AUDIT is not sent to ztunnel by istiod; evaluated here for logging only"
        )
    if ctx.action is Action.DENY and not any(_effective(g) for g in groups):
        ctx.warnings.append(
            f"{ctx.key}: after omitting attributes ztunnel cannot enforce, this DENY policy has "
            "no enforceable rules at ztunnel and will have no effect"
        )
    scope = Scope.WORKLOAD_SELECTOR
    if selector is None:
        scope = Scope.GLOBAL if namespace == root_namespace else Scope.NAMESPACE
    policy = Authorization(name, namespace, scope, ctx.action, tuple(groups), dry_run, selector)
    return TranslationResult(policy, tuple(ctx.warnings))


def _skipped(ctx: _Ctx, why: str) -> TranslationResult:
    return TranslationResult(None, (*ctx.warnings, f"{ctx.key}: not enforced by ztunnel: {why}"))


def is_dry_run(annotations: Mapping[str, object] | None) -> bool:
    """Whether the ``istio.io/dry-run`` annotation is true (PolicyError if not a boolean)."""
    return _dry_run(annotations or {})


def _dry_run(annotations: Mapping[str, object]) -> bool:
    value = mapping(annotations, "metadata.annotations").get(DRY_RUN_ANNOTATION)
    path = f"metadata.annotations[{DRY_RUN_ANNOTATION}]"
    if value is None or value == "":
        return False
    if not isinstance(value, str):
        fail(path, f"expected a string, got {type_name(value)}")
    if value not in _TRUE + _FALSE:
        fail(path, f"invalid boolean {value!r}; expected 'true' or 'false'")
    return value in _TRUE


def _check_target_refs(spec: Mapping[str, object], has_selector: bool) -> bool:
    refs: list[tuple[object, str]] = []
    if spec.get("targetRef") is not None:
        refs.append((spec["targetRef"], "spec.targetRef"))
    listed = get_list(spec, "targetRefs", "spec") or []
    if len(listed) > 16:
        fail("spec.targetRefs", "at most 16 targetRefs are allowed")
    refs += [(ref, f"spec.targetRefs[{i}]") for i, ref in enumerate(listed)]
    if refs and has_selector:
        fail("spec.selector", "only one of selector or targetRefs can be set")
    if spec.get("targetRef") is not None and listed:
        fail("spec.targetRef", "only one of targetRef or targetRefs can be set")
    for ref, path in refs:
        ref = mapping(ref, path)
        check_keys(ref, _TARGET_REF_FIELDS, path)
        for key in ("kind", "name"):
            if not get_str(ref, key, path):
                fail(f"{path}.{key}", "is required")
        for key in ("group", "namespace"):
            get_str(ref, key, path)
    return bool(refs)


def _check_provider(spec: Mapping[str, object], action: str, rules: list[object] | None) -> None:
    provider = get_mapping(spec, "provider", "spec")
    if provider is not None:
        check_keys(provider, ("name",), "spec.provider")
        if action != "CUSTOM":
            fail("spec.provider", f"provider is only allowed with action CUSTOM, not {action}")
    if action == "CUSTOM":
        if rules is None:
            fail("spec.rules", "a CUSTOM policy without rules never triggers; add `rules: [{}]`")
        if provider is None or not get_str(provider, "name", "spec.provider"):
            fail("spec.provider.name", "must not be empty for action CUSTOM")


def _effective(group: Group) -> bool:
    """Whether ztunnel can ever match the group (each clause has a non-empty match)."""
    return all(
        not clause.matches or any(not m.is_empty for m in clause.matches) for clause in group.rules
    )


def _rule(rule: object, path: str, ctx: _Ctx) -> Group | None:
    if rule is None:
        fail(path, "a rule must not be null; use {} to match everything")
    rule = mapping(rule, path)
    check_keys(rule, _RULE_FIELDS, path)
    skipped: list[str] = []
    clauses: list[Rules] = []
    tos = _entries(rule, "to", "operation", path)
    if tos:
        clauses.append(Rules(tuple(_operation(op, p, skipped) for op, p in tos)))
    froms = _entries(rule, "from", "source", path)
    if froms:
        clauses.append(Rules(tuple(_source(src, p, skipped, ctx) for src, p in froms)))
    for j, cond in enumerate(get_list(rule, "when", path) or []):
        clauses.append(Rules((_condition(cond, f"{path}.when[{j}]", skipped, ctx),)))
    if not skipped:
        return Group(tuple(clauses))
    fields = ", ".join(skipped)
    if ctx.action is Action.ALLOW:
        ctx.warnings.append(
            f"{ctx.key}: {path} omitted from ALLOW policy: ztunnel cannot enforce {fields}; "
            "the rule can never allow (enforce it at a waypoint via targetRefs)"
        )
        return None
    group = Group(tuple(clauses))
    if ctx.action is Action.DENY:
        effect = (
            "more restrictive than written"
            if _effective(group)
            else "nothing enforceable is left, so this rule never matches"
        )
        ctx.warnings.append(
            f"{ctx.key}: {path} enforced without {fields} (ztunnel cannot enforce them): {effect}"
        )
    else:
        ctx.warnings.append(f"{ctx.key}: {path} evaluated without {fields}")
    return group


def _entries(
    rule: Mapping[str, object], key: str, inner: str, path: str
) -> list[tuple[Mapping[str, object], str]]:
    items = get_list(rule, key, path)
    if items is None:
        return []
    if not items:
        fail(f"{path}.{key}", f"`{key}` must not be empty; omit it to match any")
    out = []
    for j, item in enumerate(items):
        ipath = f"{path}.{key}[{j}]"
        if item is None:
            fail(ipath, "must not be null")
        item = mapping(item, ipath)
        check_keys(item, (inner,), ipath)
        body = get_mapping(item, inner, ipath)
        if body is None:
            fail(f"{ipath}.{inner}", "is required")
        out.append((body, f"{ipath}.{inner}"))
    return out


def _operation(op: Mapping[str, object], path: str, skipped: list[str]) -> Match:
    check_keys(op, _OPERATION_L4 + _OPERATION_OTHER, path)
    values = {key: str_list(op, key, path) for key in _OPERATION_L4 + _OPERATION_OTHER}
    if not any(values.values()):
        fail(path, "must not be empty")
    for key in ("paths", "notPaths"):
        for i, value in enumerate(values[key]):
            check_path_template(value, f"{path}.{key}[{i}]")
    skipped += [f"{path}.{key}" for key in _OPERATION_OTHER if values[key]]
    return Match(
        destination_ports=_ports(values["ports"], f"{path}.ports"),
        not_destination_ports=_ports(values["notPorts"], f"{path}.notPorts"),
    )


def _source(src: Mapping[str, object], path: str, skipped: list[str], ctx: _Ctx) -> Match:
    check_keys(src, _SOURCE_L4 + _SOURCE_OTHER, path)
    v = {key: str_list(src, key, path) for key in _SOURCE_L4 + _SOURCE_OTHER}
    if not any(v.values()):
        fail(path, "must not be empty")
    identity = v["principals"] or v["notPrincipals"] or v["namespaces"] or v["notNamespaces"]
    if identity and (v["serviceAccounts"] or v["notServiceAccounts"]):
        fail(path, "cannot set serviceAccounts with namespaces or principals")
    for key in ("remoteIpBlocks", "notRemoteIpBlocks"):
        _ips(v[key], f"{path}.{key}", ctx)
    for key in ("trustDomains", "notTrustDomains"):
        for i, value in enumerate(v[key]):
            _check_wildcard(value, f"{path}.{key}[{i}]", no_slash=True)
    skipped += [f"{path}.{key}" for key in _SOURCE_OTHER if v[key]]
    positive = v["principals"] or v["namespaces"] or v["serviceAccounts"]
    negative = v["notPrincipals"] or v["notNamespaces"] or v["notServiceAccounts"]
    if ctx.action is Action.ALLOW and negative and not positive:
        ctx.warnings.append(
            f"{ctx.key}: {path}: not-only identity fields also match plaintext connections "
            "(no identity); add a positive identity field or require mTLS STRICT"
        )
    return Match(
        namespaces=_strings(v["namespaces"], f"{path}.namespaces"),
        not_namespaces=_strings(v["notNamespaces"], f"{path}.notNamespaces"),
        service_accounts=_service_accounts(v["serviceAccounts"], f"{path}.serviceAccounts", ctx),
        not_service_accounts=_service_accounts(
            v["notServiceAccounts"], f"{path}.notServiceAccounts", ctx
        ),
        principals=_principals(v["principals"], f"{path}.principals"),
        not_principals=_principals(v["notPrincipals"], f"{path}.notPrincipals"),
        source_ips=_ips(v["ipBlocks"], f"{path}.ipBlocks", ctx),
        not_source_ips=_ips(v["notIpBlocks"], f"{path}.notIpBlocks", ctx),
    )


def _condition(cond: object, path: str, skipped: list[str], ctx: _Ctx) -> Match:
    cond = mapping(cond, path)
    check_keys(cond, ("key", "values", "notValues"), path)
    key = get_str(cond, "key", path)
    if not key:
        fail(f"{path}.key", "is required")
    values, not_values = str_list(cond, "values", path), str_list(cond, "notValues", path)
    if not values and not not_values:
        fail(path, f"at least one of values or notValues must be set for key {key!r}")
    if key in L4_WHEN_KEYS:
        return _l4_condition(key, values, not_values, path, ctx)
    for vals, vpath in ((values, f"{path}.values"), (not_values, f"{path}.notValues")):
        _check_other_values(key, vals, vpath, ctx)
    skipped.append(f"{path} (key {key})")
    return Match()


def _l4_condition(
    key: str, values: tuple[str, ...], not_values: tuple[str, ...], path: str, ctx: _Ctx
) -> Match:
    vp, np = f"{path}.values", f"{path}.notValues"
    if key == "source.ip":
        return Match(source_ips=_ips(values, vp, ctx), not_source_ips=_ips(not_values, np, ctx))
    if key == "destination.ip":
        return Match(
            destination_ips=_ips(values, vp, ctx), not_destination_ips=_ips(not_values, np, ctx)
        )
    if key == "destination.port":
        return Match(
            destination_ports=_ports(values, vp), not_destination_ports=_ports(not_values, np)
        )
    if key == "source.namespace":
        return Match(namespaces=_strings(values, vp), not_namespaces=_strings(not_values, np))
    return Match(principals=_principals(values, vp), not_principals=_principals(not_values, np))


def _check_other_values(key: str, values: tuple[str, ...], path: str, ctx: _Ctx) -> None:
    """Validate a ``when`` key ztunnel cannot enforce (as Istio's ValidateAttribute)."""
    key_path = path.rsplit(".", 1)[0] + ".key"
    if key == "remote.ip":
        _ips(values, path, ctx)
    elif key == "source.serviceAccount":
        _service_accounts(values, path, ctx)
    elif key == "source.trustDomain":
        for i, value in enumerate(values):
            _check_wildcard(value, f"{path}[{i}]", no_slash=True)
    elif key.startswith(_MAP_KEYS):
        if not _MAP_KEY_RE.fullmatch(key):
            fail(key_path, f"bad key {key!r}: should have format a[b]")
    elif key == "destination.namespace" or key.startswith("destination.labels"):
        fail(key_path, f"{key!r} is replaced by the policy namespace and selector")
    elif key not in _NOT_L4_KEYS:
        fail(key_path, f"unknown attribute {key!r}")


def _ports(values: tuple[str, ...], path: str) -> tuple[int, ...]:
    return tuple(parse_port(value, f"{path}[{i}]") for i, value in enumerate(values))


def _ips(values: tuple[str, ...], path: str, ctx: _Ctx) -> tuple[IPNetwork, ...]:
    out = []
    for i, value in enumerate(values):
        network, note = parse_ip_block(value, f"{path}[{i}]")
        if note:
            ctx.warnings.append(f"{ctx.key}: {note}")
        out.append(network)
    return tuple(out)


def _check_wildcard(value: str, path: str, *, no_slash: bool = False) -> None:
    if value.count("*") > 1 or ("*" in value.strip("*")):
        fail(path, f"invalid value {value!r}: a wildcard is only allowed once, at the start or end")
    if no_slash and "/" in value:
        fail(path, f"invalid trust domain {value!r}: must not contain '/'")


def _strings(values: tuple[str, ...], path: str) -> tuple[StringMatch, ...]:
    for i, value in enumerate(values):
        _check_wildcard(value, f"{path}[{i}]")
    return tuple(StringMatch.parse(value) for value in values)


def _principals(values: tuple[str, ...], path: str) -> tuple[StringMatch, ...]:
    for i, value in enumerate(values):
        ipath = f"{path}[{i}]"
        _check_wildcard(value, ipath)
        if value.lstrip("*").startswith("spiffe://"):
            fail(ipath, f"invalid principal {value!r}: principals omit the 'spiffe://' prefix")
        if "*" not in value and not _PRINCIPAL_RE.fullmatch(value):
            fail(
                ipath,
                f"invalid principal {value!r}: expected "
                "'<trust-domain>/ns/<namespace>/sa/<service-account>', '*', 'prefix*' or '*suffix'",
            )
    return tuple(StringMatch.parse(value) for value in values)


def _service_accounts(
    values: tuple[str, ...], path: str, ctx: _Ctx
) -> tuple[ServiceAccountMatch, ...]:
    """``ns/sa`` entries; a bare ``sa`` means the policy's own namespace (as the API says)."""
    if len(values) > 16:
        fail(path, "may not have more than 16 values")
    out = []
    for i, value in enumerate(values):
        ipath = f"{path}[{i}]"
        if "*" in value:
            fail(ipath, f"wildcards are not allowed in service accounts, found {value!r}")
        if value.count("/") > 1 or len(value) > 320:
            fail(ipath, f"expected 'serviceAccount' or 'namespace/serviceAccount', found {value!r}")
        ns, slash, sa = value.rpartition("/")
        if slash and not (ns and sa):
            fail(ipath, f"expected 'serviceAccount' or 'namespace/serviceAccount', found {value!r}")
        out.append(ServiceAccountMatch(ns if slash else ctx.namespace, sa))
    return tuple(out)
