"""L7 AuthorizationPolicy at the waypoint: compile once, decide per request.

``compile_authorization_policy`` validates a policy with the same code ztunnel's
translation uses (``ambient.authz.translate``, so a policy is refused the same
way at load) and compiles the rules of a policy with ``targetRefs`` into tests.
``WaypointAuthorizer`` implements ``waypoint.model.RequestAuthorizer`` for one
waypoint. Semantics, as Istio's waypoint (Envoy RBAC filters built by istiod):

- selection: ``targets`` (Gateway, GatewayClass ``istio-waypoint`` in the root
  namespace, Service/ServiceEntry for requests to that service); policies
  without targetRefs never apply to a waypoint;
- order: CUSTOM, then DENY, then ALLOW. There are no ext-authz providers here,
  so an applicable CUSTOM policy denies every request (istiod generates a
  deny-all when a CUSTOM provider is unknown); a load warning says so. A matching
  DENY denies; with no ALLOW policy the request is allowed; otherwise some ALLOW
  policy must match. AUDIT policies only log. Dry-run (``istio.io/dry-run:
  "true"``) policies are evaluated and logged, never enforced;
- a rule matches when every clause does: ``to`` (any operation), ``from`` (any
  source), each ``when`` condition. An ALLOW policy without rules matches
  nothing; ``rules: [{}]`` matches everything;
- ``check_connection`` (TCP passed through the waypoint) follows istiod's TCP
  RBAC filter for Envoy: an ALLOW rule using HTTP/JWT attributes never matches
  (smaller allow); in DENY and AUDIT rules those attributes are ignored, so an
  entry left with nothing matches every connection (wider deny). This differs
  on purpose from ztunnel's translation (``ambient.authz.translate``), where an
  emptied entry never matches: istiod builds the two differently.

The path is normalized first (``paths``, default ``BASE``); the proxy should
forward that normalized path too, as Envoy does, so policy and backend agree.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ambient.authz._spec import (
    get_list,
    get_mapping,
    get_str,
    mapping,
    parse_ip_block,
    parse_port,
    str_list,
)
from ambient.authz.model import ServiceAccountMatch
from ambient.authz.translate import is_dry_run, translate_authorization_policy
from ambient.config.targetref import TargetRef, parse_target_refs
from ambient.waypoint.model import AuthzVerdict, Downstream, RequestHead, RequestPrincipal, Target
from ambient.waypoint.policy import matchers as m
from ambient.waypoint.policy.attributes import (
    RequestAttributes,
    connection_attributes,
    request_attributes,
)
from ambient.waypoint.policy.conditions import Predicate, compile_condition
from ambient.waypoint.policy.paths import PathNormalization
from ambient.waypoint.policy.targets import (
    ROOT_NAMESPACE,
    ServiceRef,
    WaypointRef,
    attaches_to_service,
    attaches_to_waypoint,
    is_known_kind,
    kubernetes_service_of,
)

__all__ = [
    "CompiledPolicy",
    "L7Action",
    "L7Policy",
    "WaypointAuthorizer",
    "compile_authorization_policy",
]

log = logging.getLogger("ambient.waypoint.policy")


class L7Action(enum.Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One source, operation or condition: all ``tests`` must hold."""

    tests: tuple[m.Test, ...]
    l4_tests: tuple[m.Test, ...]  # the tests a TCP connection can answer
    l7: bool

    def matches(self, a: RequestAttributes) -> bool:
        # plain loops: this is the per-request hot path, generators cost more
        for test in self.tests:  # noqa: SIM110
            if not test(a):
                return False
        return True

    def matches_connection(self, a: RequestAttributes) -> bool:
        return all(test(a) for test in self.l4_tests)  # nothing left: matches (istiod)


@dataclass(frozen=True, slots=True)
class _Rule:
    """Clauses ANDed; the entries of one clause ORed."""

    clauses: tuple[tuple[_Entry, ...], ...]
    l7: bool

    def matches(self, a: RequestAttributes) -> bool:
        for clause in self.clauses:
            for entry in clause:
                if entry.matches(a):
                    break
            else:
                return False
        return True

    def matches_connection(self, a: RequestAttributes, allow: bool) -> bool:
        if allow and self.l7:
            return False
        return all(any(e.matches_connection(a) for e in clause) for clause in self.clauses)


@dataclass(frozen=True)
class L7Policy:
    """A compiled AuthorizationPolicy with targetRefs."""

    name: str
    namespace: str
    action: L7Action
    target_refs: tuple[TargetRef, ...]
    rules: tuple[_Rule, ...] = ()
    dry_run: bool = False
    _plan: tuple[tuple[tuple[tuple[m.Test, ...], ...], ...], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __post_init__(self) -> None:
        # The rules as nested tuples of tests, cheapest clauses first (peer identity
        # before paths and headers), so that ``matches`` runs without method calls.
        plan = tuple(
            tuple(
                tuple(entry.tests for entry in clause)
                for clause in sorted(rule.clauses, key=lambda c: any(e.l7 for e in c))
            )
            for rule in self.rules
        )
        object.__setattr__(self, "_plan", plan)

    def matches(self, a: RequestAttributes) -> bool:
        """Whether any rule matches (the per-request hot path: plain loops, no calls)."""
        for clauses in self._plan:
            for entries in clauses:
                for tests in entries:
                    for test in tests:
                        if not test(a):
                            break
                    else:
                        break  # this entry matched: the clause holds
                else:
                    break  # no entry matched: the rule fails
            else:
                return True  # every clause held
        return False

    def matches_connection(self, a: RequestAttributes) -> bool:
        allow = self.action is L7Action.ALLOW
        return any(rule.matches_connection(a, allow) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """The compiled policy (None: no targetRefs, so not a waypoint's) and load warnings."""

    policy: L7Policy | None
    warnings: tuple[str, ...] = ()


def compile_authorization_policy(
    name: str,
    namespace: str,
    spec: Mapping[str, object],
    annotations: Mapping[str, object] | None = None,
    *,
    root_namespace: str = ROOT_NAMESPACE,
) -> CompiledPolicy:
    """Validate (``PolicyError`` with the field path) and compile one policy for waypoints."""
    translate_authorization_policy(
        name, namespace, spec, annotations, root_namespace=root_namespace
    )
    spec = mapping(spec, "spec")
    refs = parse_target_refs(spec)
    if not refs:
        return CompiledPolicy(None)
    key = f"{namespace}/{name}"
    warnings: list[str] = []
    for ref in refs:
        if not is_known_kind(ref):
            warnings.append(
                f"{key}: targetRef {ref.group or 'core'}/{ref.kind} {ref.name!r} never attaches "
                "to a waypoint (expected Gateway, GatewayClass, Service or ServiceEntry)"
            )
    action = L7Action(get_str(spec, "action", "spec") or "ALLOW")
    if action is L7Action.CUSTOM:
        warnings.append(
            f"{key}: CUSTOM needs an ext-authz provider and none is configured: every request "
            "this policy applies to is denied (fail closed)"
        )
    deny = action in (L7Action.DENY, L7Action.AUDIT)
    rules = []
    for i, raw in enumerate(get_list(spec, "rules", "spec") or []):
        rules.append(_rule(mapping(raw, f"spec.rules[{i}]"), namespace, deny, key, warnings))
    policy = L7Policy(name, namespace, action, refs, tuple(rules), is_dry_run(annotations))
    return CompiledPolicy(policy, tuple(warnings))


def _rule(
    rule: Mapping[str, object], namespace: str, deny: bool, key: str, warnings: list[str]
) -> _Rule:
    clauses: list[tuple[_Entry, ...]] = []
    for name, inner, build in (
        ("to", "operation", _operation),
        ("from", "source", _source),
    ):
        items = get_list(rule, name, "rule")
        if items:
            entries = []
            for item in items:
                body = get_mapping(mapping(item, name), inner, name) or {}
                entries.append(_entry(build(body, namespace)))
            clauses.append(tuple(entries))
    for cond in get_list(rule, "when", "rule") or []:
        cond = mapping(cond, "when")
        predicate = compile_condition(
            get_str(cond, "key", "when") or "",
            str_list(cond, "values", "when"),
            str_list(cond, "notValues", "when"),
            namespace=namespace,
            deny=deny,
        )
        if predicate.warning:
            warnings.append(f"{key}: {predicate.warning}")
        clauses.append((_entry([predicate]),))
    return _Rule(tuple(clauses), any(e.l7 for clause in clauses for e in clause))


def _entry(predicates: list[Predicate]) -> _Entry:
    return _Entry(
        tuple(p.test for p in predicates),
        tuple(p.test for p in predicates if not p.l7),
        any(p.l7 for p in predicates),
    )


def _field(
    out: list[Predicate],
    values: tuple[str, ...],
    not_values: tuple[str, ...],
    build: Callable[[tuple[str, ...]], m.Test],
    l7: bool,
) -> None:
    if values:
        out.append(Predicate(build(values), l7))
    if not_values:
        out.append(Predicate(m.negate(build(not_values)), l7))


def _ips(attribute: str) -> Callable[[tuple[str, ...]], m.Test]:
    return lambda values: m.ip_test([parse_ip_block(v, "ip")[0] for v in values], attribute)


def _accounts(namespace: str) -> Callable[[tuple[str, ...]], m.Test]:
    def build(values: tuple[str, ...]) -> m.Test:
        accounts = []
        for value in values:
            ns, slash, sa = value.rpartition("/")
            accounts.append(ServiceAccountMatch(ns if slash else namespace, sa))
        return m.service_account_test(accounts)

    return build


def _source(src: Mapping[str, object], namespace: str) -> list[Predicate]:
    def v(key: str) -> tuple[str, ...]:
        return str_list(src, key, "source")

    out: list[Predicate] = []
    _field(out, v("principals"), v("notPrincipals"), m.principal_test, l7=False)
    _field(out, v("namespaces"), v("notNamespaces"), m.namespace_test, l7=False)
    _field(out, v("serviceAccounts"), v("notServiceAccounts"), _accounts(namespace), l7=False)
    _field(out, v("trustDomains"), v("notTrustDomains"), m.trust_domain_test, l7=False)
    _field(out, v("ipBlocks"), v("notIpBlocks"), _ips("source_ip"), l7=False)
    _field(out, v("remoteIpBlocks"), v("notRemoteIpBlocks"), _ips("remote_ip"), l7=False)
    _field(
        out, v("requestPrincipals"), v("notRequestPrincipals"), m.request_principal_test, l7=True
    )
    return out


def _operation(op: Mapping[str, object], _namespace: str) -> list[Predicate]:
    def v(key: str) -> tuple[str, ...]:
        return str_list(op, key, "operation")

    def ports(values: tuple[str, ...]) -> m.Test:
        return m.port_test([parse_port(p, "port") for p in values])

    out: list[Predicate] = []
    _field(out, v("ports"), v("notPorts"), ports, l7=False)
    _field(out, v("methods"), v("notMethods"), m.method_test, l7=True)
    _field(out, v("paths"), v("notPaths"), m.path_test, l7=True)
    _field(out, v("hosts"), v("notHosts"), m.host_test, l7=True)
    return out


@dataclass(frozen=True, slots=True)
class _Selected:
    """The policies that apply to one target, by role."""

    custom: tuple[L7Policy, ...] = ()
    deny: tuple[L7Policy, ...] = ()
    allow: tuple[L7Policy, ...] = ()
    logged: tuple[L7Policy, ...] = ()  # AUDIT and dry-run

    @property
    def empty(self) -> bool:
        return not (self.custom or self.deny or self.allow or self.logged)


_NO_POLICY = AuthzVerdict(True, None, "no policy applies")


@dataclass
class WaypointAuthorizer:
    """``RequestAuthorizer`` for one waypoint (immutable; build a new one on config change)."""

    policies: Iterable[L7Policy]
    waypoint: WaypointRef
    root_namespace: str = ROOT_NAMESPACE
    service_of: Callable[[Target], ServiceRef | None] = kubernetes_service_of
    normalization: PathNormalization = PathNormalization.BASE
    num_trusted_proxies: int = 0
    _waypoint_wide: tuple[L7Policy, ...] = field(init=False, default=())
    _by_service: tuple[L7Policy, ...] = field(init=False, default=())
    _cache: dict[tuple[str, str | None], _Selected] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.policies = tuple(self.policies)
        self._waypoint_wide = tuple(
            p
            for p in self.policies
            if attaches_to_waypoint(p.namespace, p.target_refs, self.waypoint, self.root_namespace)
        )
        self._by_service = tuple(p for p in self.policies if p not in self._waypoint_wide)

    def select(self, target: Target) -> _Selected:
        """The policies that apply to requests for ``target`` (cached per target)."""
        cache_key = (target.namespace, target.hostname)
        selected = self._cache.get(cache_key)
        if selected is None:
            service = self.service_of(target)
            chosen = list(self._waypoint_wide)
            chosen += [
                p
                for p in self._by_service
                if attaches_to_service(p.namespace, p.target_refs, service)
            ]
            enforced = [p for p in chosen if not p.dry_run]
            selected = _Selected(
                custom=tuple(p for p in enforced if p.action is L7Action.CUSTOM),
                deny=tuple(p for p in enforced if p.action is L7Action.DENY),
                allow=tuple(p for p in enforced if p.action is L7Action.ALLOW),
                logged=tuple(
                    p
                    for p in chosen
                    if (p.dry_run or p.action is L7Action.AUDIT) and p.action is not L7Action.CUSTOM
                ),
            )
            self._cache[cache_key] = selected
        return selected

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        selected = self.select(target)
        if selected.empty:
            return _NO_POLICY
        attributes = request_attributes(
            target,
            downstream,
            request,
            principal,
            normalization=self.normalization,
            num_trusted_proxies=self.num_trusted_proxies,
        )
        return _decide(selected, attributes, L7Policy.matches, target)

    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        selected = self.select(target)
        if selected.empty:
            return _NO_POLICY
        return _decide(
            selected, connection_attributes(target, downstream), L7Policy.matches_connection, target
        )


def _decide(
    selected: _Selected,
    a: RequestAttributes,
    matches: Callable[[L7Policy, RequestAttributes], bool],
    target: Target,
) -> AuthzVerdict:
    for policy in selected.logged:
        _log_only(policy, matches(policy, a), a, target)
    if selected.custom:
        policy = selected.custom[0]
        return AuthzVerdict(False, policy.key, "CUSTOM policy without an ext-authz provider")
    for policy in selected.deny:
        if matches(policy, a):
            return AuthzVerdict(False, policy.key, "matched a DENY policy")
    if not selected.allow:
        return AuthzVerdict(True, None, "no ALLOW policy applies")
    for policy in selected.allow:
        if matches(policy, a):
            return AuthzVerdict(True, policy.key, "matched an ALLOW policy")
    return AuthzVerdict(False, None, "no ALLOW policy matched")


def _log_only(policy: L7Policy, matched: bool, a: RequestAttributes, target: Target) -> None:
    what = "dry-run" if policy.dry_run else "audit"
    if policy.dry_run:
        effect = {
            L7Action.ALLOW: "would allow" if matched else "would not allow",
            L7Action.DENY: "would deny" if matched else "would not deny",
            L7Action.AUDIT: "would audit" if matched else "would not audit",
            L7Action.CUSTOM: "",
        }[policy.action]
    elif not matched:
        return
    else:
        effect = "matched"
    log.info(
        "%s %s: %s %s %s%s from %s (%s) to %s:%d",
        what,
        policy.key,
        effect,
        a.method or "tcp",
        a.host,
        a.path,
        a.source_ip,
        a.principal or "no identity",
        target.hostname or target.address,
        target.port,
    )
