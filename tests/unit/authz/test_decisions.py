"""Decision table: each case is policies as written, one connection, and Istio's verdict.

Every case names the rule it checks (``rule``). Sources: istio.io AuthorizationPolicy
reference (istio/api ``security/v1beta1/authorization_policy.proto``), istiod's ambient
translation (istio/istio ``pilot/pkg/serviceregistry/ambient/authorization.go``),
ztunnel's matcher (istio/ztunnel ``src/rbac.rs``, ``src/state.rs``) and the istio.io
PeerAuthentication reference. Every case is also checked against the naive reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ambient.authz.evaluate import Connection, Workload

from .helpers import AP, ORDERS, PA, WEB, build_store, checked_decide, conn

UNSET = "<not checked>"
PROBE = "cluster.local/ns/monitoring/sa/probe"
DEV = "cluster.local/ns/dev/sa/tester"
OTHER_TD = "other.td/ns/shop/sa/web"
WEB_APP = Workload("shop", {"app": "web"})

# Rules, quoted briefly from the sources above.
ORDER_DENY = "istio.io authorization-policy: 'If there are any DENY policies that match the request, deny the request.'"
ORDER_NO_ALLOW = "istio.io authorization-policy: 'If there are no ALLOW policies for the workload, allow the request.'"
ORDER_ALLOW = "istio.io authorization-policy: 'If any of the ALLOW policies match the request, allow the request.'"
ORDER_ELSE = "istio.io authorization-policy: '5. Deny the request.' (no ALLOW policy matched)"
ALLOW_NOTHING = (
    "istio.io authorization-policy: spec {} 'allows nothing and effectively denies all requests'"
)
ALLOW_ALL = "istio.io authorization-policy: rules [{}] 'allows all requests'; 'An empty rule is always matched.'"
DENY_ALL = "istio.io authorization-policy: action DENY with an empty rule matches every request"
RULES_UNSET = "istio.io authorization-policy rules: 'If not set, the match will never occur.'"
ROOT_NS = "istio.io authorization-policy: 'If set to root namespace, the policy applies to all namespaces in a mesh.'"
NS_SCOPE = "istio.io authorization-policy selector: 'If the selector and the targetRef are not set, the selector will match all workloads' (of the policy's namespace)"
SELECTOR = "istio.io authorization-policy selector: 'The selector will match with workloads in the same namespace as the authorization policy.'"
ROOT_SELECTOR = "istio.io authorization-policy selector: 'If the authorization policy is in the root namespace, the selector will additionally match with workloads in all namespaces.'"
EXACT = 'istio.io authorization-policy Rule: \'Exact match: "abc" will match on value "abc".\''
PREFIX = 'istio.io authorization-policy Rule: \'Prefix match: "abc*" will match on value "abc" and "abcd".\''
SUFFIX = 'istio.io authorization-policy Rule: \'Suffix match: "*abc" will match on value "abc" and "xabc".\''
PRESENCE = "istio.io authorization-policy Rule: 'Presence match: \"*\" will match when value is not empty.'"
PRINCIPALS = "istio.io authorization-policy principals: '<TRUST_DOMAIN>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>' ... 'This field requires mTLS enabled'"
NOT_FIELDS = "istio.io authorization-policy: not* fields are 'A list of negative match'"
NO_IDENTITY_NOT = "istio/ztunnel rbac.rs tests: not_principals / not_namespaces / not_service_accounts match a plaintext connection"
NAMESPACES = "istio.io authorization-policy namespaces: 'derived from the peer certificate. This field requires mTLS enabled'"
SERVICE_ACCOUNTS = "istio.io authorization-policy serviceAccounts: '<namespace>/<serviceaccount>'; '<serviceaccount>' alone uses the policy's namespace"
SA_NO_TD = "istio/ztunnel rbac.rs ServiceAccountMatch: the trust domain is not compared"
IP_BLOCKS = "istio.io authorization-policy ipBlocks: 'Single IP (e.g. 203.0.113.4) and CIDR (e.g. 203.0.113.0/24) are supported.'"
PORTS = "istio.io authorization-policy ports: 'A list of ports as specified in the connection.'"
SOURCE_AND = "istio.io authorization-policy Source: 'Fields in the source are ANDed together.'"
RULE_MATCH = "istio.io authorization-policy Rule: 'A match occurs when at least one source, one operation and all conditions matches the request.'"
ANY_RULE = "istio.io authorization-policy rules: 'A match occurs when at least one rule matches the request.'"
WHEN_L4 = "istiod ambient l4WhenAttributes: source.ip, source.namespace, source.principal, destination.ip, destination.port are enforced by ztunnel"
L7_ALLOW = "istiod ambient: 'Within an ALLOW policy, rules matching HTTP attributes are omitted.'"
L7_DENY = "istiod ambient: 'DENY policy with HTTP attributes is enforced without the HTTP rules.'"
L7_DENY_NOOP = "istiod ambient: a DENY with nothing enforceable left 'will have no effect' (ztunnel rbac.rs skips empty matches)"
DRY_RUN = "istio.io authorization-policy: annotation istio.io/dry-run 'to dry-run the policy without actually enforcing it'"
AUDIT = "istio.io authorization-policy: 'AUDIT policies do not affect whether requests are allowed or denied to the workload.'"
PA_STRICT = "istio.io PeerAuthentication STRICT: 'Connection is an mTLS tunnel (TLS with client cert must be presented).'"
PA_PERMISSIVE = (
    "istio.io PeerAuthentication PERMISSIVE: 'Connection can be either plaintext or mTLS tunnel.'"
)
PA_PRECEDENCE = "istio.io PeerAuthentication: workload (selector) policy overrides namespace, which overrides mesh; UNSET inherits"
PA_DISABLE = "istio.io PeerAuthentication: 'In ambient mode ... DISABLE mode is not supported' (istiod treats it as PERMISSIVE)"
PA_PORT = "istio.io PeerAuthentication portLevelMtls: 'The port refers to the port of the workload'"
IPV4_MAPPED = (
    "ztunnel compares canonical socket addresses: an IPv4-mapped IPv6 peer is its IPv4 address"
)
SEED = "seed guide section 4: mesh STRICT + deny-all (spec {}) in shop + orders-allow-web"


def src(**fields: object) -> dict[str, object]:
    return {"source": fields}


def op(**fields: object) -> dict[str, object]:
    return {"operation": fields}


def when(
    key: str, values: list[str] | None = None, not_values: list[str] | None = None
) -> dict[str, object]:
    out: dict[str, object] = {"key": key}
    if values is not None:
        out["values"] = values
    if not_values is not None:
        out["notValues"] = not_values
    return out


def rule(
    frm: list[dict[str, object]] | None = None,
    to: list[dict[str, object]] | None = None,
    whens: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    out: dict[str, object] = {}
    if frm is not None:
        out["from"] = frm
    if to is not None:
        out["to"] = to
    if whens is not None:
        out["when"] = whens
    return out


def allow(
    name: str,
    *rules: dict[str, object],
    ns: str = "shop",
    app: str | None = None,
    dry_run: bool = False,
) -> AP:
    spec: dict[str, object] = {"action": "ALLOW", "rules": list(rules)}
    if app is not None:
        spec["selector"] = {"matchLabels": {"app": app}}
    return AP(ns, name, spec, {"istio.io/dry-run": "true"} if dry_run else {})


def deny(
    name: str,
    *rules: dict[str, object],
    ns: str = "shop",
    app: str | None = None,
    dry_run: bool = False,
) -> AP:
    policy = allow(name, *rules, ns=ns, app=app, dry_run=dry_run)
    return AP(policy.namespace, policy.name, {**policy.spec, "action": "DENY"}, policy.annotations)


def audit(name: str, *rules: dict[str, object], ns: str = "shop") -> AP:
    return AP(ns, name, {"action": "AUDIT", "rules": list(rules)})


def strict(
    ns: str = "istio-system",
    name: str = "default",
    mode: str = "STRICT",
    app: str | None = None,
    ports: dict[int, str] | None = None,
) -> PA:
    spec: dict[str, object] = {"mtls": {"mode": mode}}
    if app is not None:
        spec["selector"] = {"matchLabels": {"app": app}}
    if ports:
        spec["portLevelMtls"] = {port: {"mode": m} for port, m in ports.items()}
    return PA(ns, name, spec)


@dataclass(frozen=True)
class Case:
    id: str
    rule: str
    policies: tuple[AP, ...]
    conn: Connection
    allowed: bool
    workload: Workload = ORDERS
    policy: str | None = UNSET
    peers: tuple[PA, ...] = ()
    audit: tuple[str, ...] = ()
    dry_run: tuple[str, ...] = ()
    dry_run_allowed: bool | str | None = UNSET


def C(
    id: str, rule: str, policies: list[AP], connection: Connection, allowed: bool, **kw: object
) -> Case:
    return Case(id, rule, tuple(policies), connection, allowed, **kw)  # type: ignore[arg-type]


ALL = rule()
FROM_WEB = rule([src(principals=[WEB])])
# fmt: off
CASES: list[Case] = [
    # --- evaluation order and named patterns -------------------------------------------
    C("no-policies-allow", ORDER_NO_ALLOW, [], conn(), True, policy=None),
    C("no-policies-plaintext-allow", ORDER_NO_ALLOW, [], conn(None), True),
    C("allow-nothing", ALLOW_NOTHING, [AP("shop", "allow-nothing", {})], conn(), False, policy=None),
    C("allow-nothing-explicit-action", ALLOW_NOTHING, [AP("shop", "n", {"action": "ALLOW"})], conn(), False),
    C("allow-nothing-empty-rules", RULES_UNSET, [AP("shop", "n", {"rules": []})], conn(), False),
    C("allow-all", ALLOW_ALL, [allow("allow-all", ALL)], conn(), True, policy="shop/allow-all"),
    C("allow-all-plaintext", ALLOW_ALL, [allow("allow-all", ALL)], conn(None), True),
    C("deny-all", DENY_ALL, [deny("deny-all", ALL)], conn(), False, policy="shop/deny-all"),
    C("deny-all-plaintext", DENY_ALL, [deny("deny-all", ALL)], conn(None), False),
    C("deny-beats-allow", ORDER_DENY, [allow("a", ALL), deny("d", ALL)], conn(), False, policy="shop/d"),
    C("deny-beats-matching-allow", ORDER_DENY, [allow("a", FROM_WEB), deny("d", rule(to=[op(ports=["8080"])]))], conn(), False, policy="shop/d"),
    C("deny-not-matching-no-allow", ORDER_NO_ALLOW, [deny("d", rule([src(namespaces=["dev"])]))], conn(), True, policy=None),
    C("deny-not-matching-allow-matches", ORDER_ALLOW, [deny("d", rule([src(namespaces=["dev"])])), allow("a", FROM_WEB)], conn(), True, policy="shop/a"),
    C("allow-not-matching-deny", ORDER_ELSE, [allow("a", rule([src(principals=[PROBE])]))], conn(), False, policy=None),
    C("second-allow-matches", ORDER_ALLOW, [allow("a1", rule([src(namespaces=["dev"])])), allow("a2", FROM_WEB)], conn(), True, policy="shop/a2"),
    C("allow-nothing-plus-allow", ORDER_ALLOW, [AP("shop", "deny-all", {}), allow("a", FROM_WEB)], conn(), True),
    C("first-deny-in-name-order", ORDER_DENY, [deny("z", ALL), deny("b", ALL)], conn(), False, policy="shop/b"),
    C("rules-any-second-matches", ANY_RULE, [allow("a", rule([src(namespaces=["dev"])]), FROM_WEB)], conn(), True),
    C("rules-none-match", ANY_RULE, [allow("a", rule([src(namespaces=["dev"])]), rule([src(namespaces=["web"])]))], conn(), False),
    # --- scopes --------------------------------------------------------------------------
    C("root-deny-all-applies-everywhere", ROOT_NS, [deny("deny-all", ALL, ns="istio-system")], conn(), False, policy="istio-system/deny-all"),
    C("root-allow-nothing-applies-everywhere", ROOT_NS, [AP("istio-system", "allow-nothing", {})], conn(), False),
    C("root-deny-beats-namespace-allow", ROOT_NS, [deny("d", ALL, ns="istio-system"), allow("a", ALL)], conn(), False),
    C("root-allow-plus-namespace-allow-nothing", ROOT_NS, [allow("a", FROM_WEB, ns="istio-system"), AP("shop", "n", {})], conn(), True),
    C("root-selector-matches-any-namespace", ROOT_SELECTOR, [deny("d", ALL, ns="istio-system", app="orders")], conn(), False),
    C("root-selector-other-labels", ROOT_SELECTOR, [deny("d", ALL, ns="istio-system", app="payments")], conn(), True),
    C("namespace-policy-applies-to-all-workloads", NS_SCOPE, [deny("d", ALL)], conn(), False, workload=WEB_APP),
    C("namespace-policy-other-namespace", NS_SCOPE, [deny("d", ALL, ns="web")], conn(), True),
    C("namespace-allow-other-namespace-no-allow", NS_SCOPE, [AP("web", "n", {})], conn(), True),
    C("selector-matches", SELECTOR, [deny("d", ALL, app="orders")], conn(), False),
    C("selector-other-workload", SELECTOR, [deny("d", ALL, app="orders")], conn(), True, workload=WEB_APP),
    C("selector-other-namespace", SELECTOR, [deny("d", ALL, ns="web", app="orders")], conn(), True),
    C("selector-subset-of-labels", SELECTOR, [AP("shop", "v1", {"selector": {"matchLabels": {"version": "v1"}}, "action": "DENY", "rules": [{}]})], conn(), False),
    C("selector-needs-all-labels", SELECTOR, [AP("shop", "v", {"selector": {"matchLabels": {"app": "orders", "tier": "db"}}, "action": "DENY", "rules": [{}]})], conn(), True),
    C("selector-value-differs", SELECTOR, [AP("shop", "v2", {"selector": {"matchLabels": {"version": "v2"}}, "action": "DENY", "rules": [{}]})], conn(), True),
    C("selector-allow-nothing-other-workload", SELECTOR, [AP("shop", "n", {"selector": {"matchLabels": {"app": "orders"}}})], conn(), True, workload=WEB_APP),
    # --- principals -----------------------------------------------------------------------
    C("principal-exact", EXACT, [allow("a", FROM_WEB)], conn(), True),
    C("principal-exact-other", EXACT, [allow("a", FROM_WEB)], conn(PROBE), False),
    C("principal-exact-trust-domain-differs", PRINCIPALS, [allow("a", FROM_WEB)], conn(OTHER_TD), False),
    C("principal-plaintext", PRINCIPALS, [allow("a", FROM_WEB)], conn(None), False),
    C("principal-prefix", PREFIX, [allow("a", rule([src(principals=["cluster.local/ns/shop/*"])]))], conn(), True),
    C("principal-prefix-other-namespace", PREFIX, [allow("a", rule([src(principals=["cluster.local/ns/shop/*"])]))], conn(PROBE), False),
    C("principal-suffix", SUFFIX, [allow("a", rule([src(principals=["*/sa/web"])]))], conn(OTHER_TD), True),
    C("principal-suffix-other", SUFFIX, [allow("a", rule([src(principals=["*/sa/web"])]))], conn(PROBE), False),
    C("principal-presence", PRESENCE, [allow("a", rule([src(principals=["*"])]))], conn(PROBE), True),
    C("principal-presence-plaintext", PRESENCE, [allow("a", rule([src(principals=["*"])]))], conn(None), False),
    C("principals-any-of", EXACT, [allow("a", rule([src(principals=[PROBE, WEB])]))], conn(), True),
    C("not-principals-excludes", NOT_FIELDS, [allow("a", rule([src(notPrincipals=[WEB])]))], conn(), False),
    C("not-principals-other", NOT_FIELDS, [allow("a", rule([src(notPrincipals=[WEB])]))], conn(PROBE), True),
    C("not-principals-plaintext-matches", NO_IDENTITY_NOT, [allow("a", rule([src(notPrincipals=[WEB])]))], conn(None), True),
    C("deny-not-principals-presence-plaintext", NO_IDENTITY_NOT, [deny("require-mtls", rule([src(notPrincipals=["*"])]))], conn(None), False),
    C("deny-not-principals-presence-mtls", PRESENCE, [deny("require-mtls", rule([src(notPrincipals=["*"])]))], conn(), True),
    C("not-principals-prefix", NOT_FIELDS, [allow("a", rule([src(notPrincipals=["cluster.local/ns/monitoring/*"])]))], conn(PROBE), False),
    # --- namespaces -----------------------------------------------------------------------
    C("namespace-exact", NAMESPACES, [allow("a", rule([src(namespaces=["shop"])]))], conn(), True),
    C("namespace-exact-other", NAMESPACES, [allow("a", rule([src(namespaces=["shop"])]))], conn(DEV), False),
    C("namespace-plaintext", NAMESPACES, [allow("a", rule([src(namespaces=["shop"])]))], conn(None), False),
    C("namespace-prefix", PREFIX, [allow("a", rule([src(namespaces=["sh*"])]))], conn(), True),
    C("namespace-prefix-other", PREFIX, [allow("a", rule([src(namespaces=["sh*"])]))], conn(DEV), False),
    C("namespace-suffix", SUFFIX, [allow("a", rule([src(namespaces=["*ing"])]))], conn(PROBE), True),
    C("namespace-suffix-other", SUFFIX, [allow("a", rule([src(namespaces=["*ing"])]))], conn(), False),
    C("namespace-presence", PRESENCE, [allow("a", rule([src(namespaces=["*"])]))], conn(DEV), True),
    C("namespace-presence-plaintext", PRESENCE, [allow("a", rule([src(namespaces=["*"])]))], conn(None), False),
    C("not-namespaces-excludes", NOT_FIELDS, [allow("a", rule([src(notNamespaces=["dev"])]))], conn(DEV), False),
    C("not-namespaces-other", NOT_FIELDS, [allow("a", rule([src(notNamespaces=["dev"])]))], conn(), True),
    C("not-namespaces-plaintext-matches", NO_IDENTITY_NOT, [allow("a", rule([src(notNamespaces=["dev"])]))], conn(None), True),
    C("deny-not-namespaces", NOT_FIELDS, [deny("only-shop", rule([src(notNamespaces=["shop"])]))], conn(DEV), False),
    C("deny-not-namespaces-own", NOT_FIELDS, [deny("only-shop", rule([src(notNamespaces=["shop"])]))], conn(), True),
    # --- service accounts -----------------------------------------------------------------
    C("service-account-qualified", SERVICE_ACCOUNTS, [allow("a", rule([src(serviceAccounts=["shop/web"])]))], conn(), True),
    C("service-account-bare-uses-policy-namespace", SERVICE_ACCOUNTS, [allow("a", rule([src(serviceAccounts=["web"])]))], conn(), True),
    C("service-account-bare-other-namespace", SERVICE_ACCOUNTS, [allow("a", rule([src(serviceAccounts=["web"])]))], conn("cluster.local/ns/web/sa/web"), False),
    C("service-account-other", SERVICE_ACCOUNTS, [allow("a", rule([src(serviceAccounts=["shop/web"])]))], conn(PROBE), False),
    C("service-account-any-trust-domain", SA_NO_TD, [allow("a", rule([src(serviceAccounts=["shop/web"])]))], conn(OTHER_TD), True),
    C("service-account-plaintext", SERVICE_ACCOUNTS, [allow("a", rule([src(serviceAccounts=["shop/web"])]))], conn(None), False),
    C("not-service-accounts-excludes", NOT_FIELDS, [allow("a", rule([src(notServiceAccounts=["shop/web"])]))], conn(), False),
    C("not-service-accounts-plaintext-matches", NO_IDENTITY_NOT, [allow("a", rule([src(notServiceAccounts=["shop/web"])]))], conn(None), True),
    # --- IP blocks ----------------------------------------------------------------------
    C("ip-block-single", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["10.0.0.1"])]))], conn(), True),
    C("ip-block-single-other", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["10.0.0.1"])]))], conn(src="10.0.0.2"), False),
    C("ip-block-cidr", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["10.0.0.0/16"])]))], conn(src="10.0.255.9"), True),
    C("ip-block-cidr-outside", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["10.0.0.0/16"])]))], conn(src="10.1.0.1"), False),
    C("ip-block-ipv6", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["2001:db8::/32"])]))], conn(src="2001:db8:1::5"), True),
    C("ip-block-ipv6-outside", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["2001:db8::/32"])]))], conn(src="2001:db9::5"), False),
    C("ip-block-v4-not-v6-peer", IP_BLOCKS, [allow("a", rule([src(ipBlocks=["0.0.0.0/0"])]))], conn(src="2001:db8::1"), False),
    C("ip-block-v4-mapped-peer", IPV4_MAPPED, [allow("a", rule([src(ipBlocks=["10.0.0.0/24"])]))], conn(src="::ffff:10.0.0.9"), True),
    C("not-ip-blocks-excludes", NOT_FIELDS, [allow("a", rule([src(notIpBlocks=["10.0.0.0/24"])]))], conn(), False),
    C("not-ip-blocks-other", NOT_FIELDS, [allow("a", rule([src(notIpBlocks=["10.0.0.0/24"])]))], conn(src="10.9.0.1"), True),
    C("deny-ip-block", IP_BLOCKS, [deny("d", rule([src(ipBlocks=["10.0.0.0/8"])])), allow("a", ALL)], conn(), False),
    C("deny-ipv6-block", IP_BLOCKS, [deny("d", rule([src(ipBlocks=["fd00::/8"])]))], conn(src="fd12::1"), False),
    # --- ports -------------------------------------------------------------------------
    C("port-matches", PORTS, [allow("a", rule(to=[op(ports=["8080"])]))], conn(), True),
    C("port-other", PORTS, [allow("a", rule(to=[op(ports=["8080"])]))], conn(port=9090), False),
    C("ports-any-of", PORTS, [allow("a", rule(to=[op(ports=["80", "8080"])]))], conn(), True),
    C("to-entries-ored", RULE_MATCH, [allow("a", rule(to=[op(ports=["80"]), op(ports=["8080"])]))], conn(), True),
    C("not-ports-excludes", NOT_FIELDS, [allow("a", rule(to=[op(notPorts=["8080"])]))], conn(), False),
    C("not-ports-other", NOT_FIELDS, [allow("a", rule(to=[op(notPorts=["8080"])]))], conn(port=9090), True),
    C("port-max", PORTS, [allow("a", rule(to=[op(ports=["65535"])]))], conn(port=65535), True),
    C("deny-port-only-that-port", PORTS, [deny("d", rule(to=[op(ports=["9090"])]))], conn(port=8080), True),
    C("deny-port", PORTS, [deny("d", rule(to=[op(ports=["9090"])]))], conn(port=9090), False),
    # --- combinations ----------------------------------------------------------------------
    C("source-fields-anded", SOURCE_AND, [allow("a", rule([src(principals=[WEB], ipBlocks=["192.168.0.0/16"])]))], conn(), False),
    C("source-fields-anded-match", SOURCE_AND, [allow("a", rule([src(principals=[WEB], ipBlocks=["10.0.0.0/8"])]))], conn(), True),
    C("from-entries-ored", RULE_MATCH, [allow("a", rule([src(principals=[PROBE]), src(namespaces=["shop"])]))], conn(), True),
    C("from-and-to", RULE_MATCH, [allow("a", rule([src(principals=[WEB])], [op(ports=["9090"])]))], conn(), False),
    C("from-and-to-match", RULE_MATCH, [allow("a", rule([src(principals=[WEB])], [op(ports=["8080"])]))], conn(), True),
    C("from-to-when-all", RULE_MATCH, [allow("a", rule([src(principals=[WEB])], [op(ports=["8080"])], [when("source.ip", ["10.0.0.0/8"])]))], conn(), True),
    C("from-to-when-when-fails", RULE_MATCH, [allow("a", rule([src(principals=[WEB])], [op(ports=["8080"])], [when("source.ip", ["192.168.0.0/16"])]))], conn(), False),
    C("whens-anded", RULE_MATCH, [allow("a", rule(whens=[when("source.namespace", ["shop"]), when("destination.port", ["9090"])]))], conn(), False),
    # --- L4 when conditions ---------------------------------------------------------------
    C("when-source-ip", WHEN_L4, [allow("a", rule(whens=[when("source.ip", ["10.0.0.1"])]))], conn(), True),
    C("when-source-ip-not-values", WHEN_L4, [allow("a", rule(whens=[when("source.ip", not_values=["10.0.0.1"])]))], conn(), False),
    C("when-source-namespace", WHEN_L4, [allow("a", rule(whens=[when("source.namespace", ["shop"])]))], conn(), True),
    C("when-source-namespace-plaintext", WHEN_L4, [allow("a", rule(whens=[when("source.namespace", ["shop"])]))], conn(None), False),
    C("when-source-principal", WHEN_L4, [allow("a", rule(whens=[when("source.principal", [WEB])]))], conn(), True),
    C("when-source-principal-not", WHEN_L4, [allow("a", rule(whens=[when("source.principal", not_values=[WEB])]))], conn(), False),
    C("when-destination-ip", WHEN_L4, [allow("a", rule(whens=[when("destination.ip", ["10.0.1.0/24"])]))], conn(), True),
    C("when-destination-ip-v6", WHEN_L4, [allow("a", rule(whens=[when("destination.ip", ["fd00::/8"])]))], conn(dst="fd00::7"), True),
    C("when-destination-ip-other", WHEN_L4, [allow("a", rule(whens=[when("destination.ip", ["10.0.2.0/24"])]))], conn(), False),
    C("when-destination-port", WHEN_L4, [allow("a", rule(whens=[when("destination.port", ["8080"])]))], conn(), True),
    C("when-destination-port-not", WHEN_L4, [allow("a", rule(whens=[when("destination.port", not_values=["8080"])]))], conn(), False),
    C("when-values-and-not-values", WHEN_L4, [allow("a", rule(whens=[when("source.ip", ["10.0.0.0/8"], ["10.0.0.1"])]))], conn(), False),
    C("when-values-and-not-values-match", WHEN_L4, [allow("a", rule(whens=[when("source.ip", ["10.0.0.0/8"], ["10.0.0.2"])]))], conn(), True),
    # --- L7 attributes at L4 --------------------------------------------------------------
    C("allow-methods-dropped", L7_ALLOW, [allow("a", rule([src(principals=[WEB])], [op(methods=["GET"])]))], conn(), False),
    C("allow-paths-with-ports-dropped", L7_ALLOW, [allow("a", rule(to=[op(ports=["8080"], paths=["/api"])]))], conn(), False),
    C("allow-hosts-dropped", L7_ALLOW, [allow("a", rule(to=[op(hosts=["orders.shop"])]))], conn(), False),
    C("allow-not-methods-dropped", L7_ALLOW, [allow("a", rule(to=[op(notMethods=["DELETE"])]))], conn(), False),
    C("allow-request-principals-dropped", L7_ALLOW, [allow("a", rule([src(requestPrincipals=["issuer/subject"])]))], conn(), False),
    C("allow-remote-ip-blocks-dropped", L7_ALLOW, [allow("a", rule([src(remoteIpBlocks=["10.0.0.0/8"])]))], conn(), False),
    C("allow-header-condition-dropped", L7_ALLOW, [allow("a", rule([src(principals=[WEB])], whens=[when("request.headers[x-user]", ["alice"])]))], conn(), False),
    C("allow-sni-condition-dropped", L7_ALLOW, [allow("a", rule(whens=[when("connection.sni", ["orders"])]))], conn(), False),
    C("allow-trust-domains-dropped", L7_ALLOW, [allow("a", rule([src(trustDomains=["cluster.local"])]))], conn(), False),
    C("allow-l7-rule-dropped-l4-rule-kept", L7_ALLOW, [allow("a", rule(to=[op(methods=["GET"])]), FROM_WEB)], conn(), True),
    C("deny-methods-with-port-enforced-on-port", L7_DENY, [deny("d", rule(to=[op(methods=["POST"], ports=["8080"])]))], conn(), False),
    C("deny-methods-with-port-other-port", L7_DENY, [deny("d", rule(to=[op(methods=["POST"], ports=["8080"])]))], conn(port=9090), True),
    C("deny-from-namespace-with-paths-no-effect", L7_DENY_NOOP, [deny("d", rule([src(namespaces=["dev"])], [op(paths=["/admin"])]))], conn(DEV), True),
    C("deny-from-namespace-with-ports-and-paths", L7_DENY, [deny("d", rule([src(namespaces=["dev"])], [op(ports=["8080"], paths=["/admin"])]))], conn(DEV), False),
    C("deny-from-namespace-and-request-principals", L7_DENY, [deny("d", rule([src(namespaces=["dev"], requestPrincipals=["*"])]))], conn(DEV), False),
    C("deny-methods-only-no-effect", L7_DENY_NOOP, [deny("d", rule(to=[op(methods=["POST"])]))], conn(), True),
    C("deny-header-condition-no-effect", L7_DENY_NOOP, [deny("d", rule([src(namespaces=["shop"])], whens=[when("request.auth.claims[iss]", ["x"])]))], conn(), True),
    C("deny-request-principals-no-effect", L7_DENY_NOOP, [deny("d", rule([src(requestPrincipals=["*"])]))], conn(), True),
    C("deny-l7-entry-skipped-l4-entry-kept", L7_DENY, [deny("d", rule(to=[op(methods=["GET"]), op(ports=["8080"])]))], conn(), False),
    # --- dry-run and AUDIT ---------------------------------------------------------------
    C("dry-run-deny-not-enforced", DRY_RUN, [deny("d", ALL, dry_run=True)], conn(), True, policy=None, dry_run=("shop/d",), dry_run_allowed=False),
    C("dry-run-allow-nothing-not-enforced", DRY_RUN, [AP("shop", "n", {}, {"istio.io/dry-run": "true"})], conn(), True, dry_run=(), dry_run_allowed=False),
    C("dry-run-allow-would-allow", DRY_RUN, [allow("a", FROM_WEB, dry_run=True), AP("shop", "n", {})], conn(), False, dry_run=("shop/a",), dry_run_allowed=True),
    C("dry-run-false-enforced", DRY_RUN, [AP("shop", "d", {"action": "DENY", "rules": [{}]}, {"istio.io/dry-run": "false"})], conn(), False, policy="shop/d"),
    C("dry-run-alongside-enforced-deny", DRY_RUN, [deny("d", ALL), allow("x", ALL, dry_run=True)], conn(), False, policy="shop/d", dry_run=("shop/x",), dry_run_allowed=False),
    C("audit-never-decides", AUDIT, [audit("log", ALL)], conn(), True, policy=None, audit=("shop/log",)),
    C("audit-is-not-an-allow-policy", AUDIT, [audit("log", FROM_WEB), AP("shop", "n", {})], conn(), False, audit=("shop/log",)),
    C("audit-not-matching", AUDIT, [audit("log", rule([src(namespaces=["dev"])]))], conn(), True, audit=()),
    # --- PeerAuthentication ---------------------------------------------------------------
    C("mesh-strict-plaintext", PA_STRICT, [], conn(None), False, peers=(strict(),), policy="istio-system/istio_converted_static_strict"),
    C("mesh-strict-mtls", PA_STRICT, [], conn(), True, peers=(strict(),)),
    C("mesh-permissive-plaintext", PA_PERMISSIVE, [], conn(None), True, peers=(strict(mode="PERMISSIVE"),)),
    C("namespace-permissive-over-mesh-strict", PA_PRECEDENCE, [], conn(None), True, peers=(strict(), strict("shop", mode="PERMISSIVE"))),
    C("namespace-unset-inherits-strict", PA_PRECEDENCE, [], conn(None), False, peers=(strict(), strict("shop", mode="UNSET"))),
    C("workload-permissive-over-namespace-strict", PA_PRECEDENCE, [], conn(None), True, peers=(strict("shop"), strict("shop", "orders", "PERMISSIVE", app="orders"))),
    C("workload-strict-over-mesh-permissive", PA_PRECEDENCE, [], conn(None), False, peers=(strict(mode="PERMISSIVE"), strict("shop", "orders", app="orders"))),
    C("workload-strict-other-workload", PA_PRECEDENCE, [], conn(None), True, workload=WEB_APP, peers=(strict("shop", "orders", app="orders"),)),
    C("disable-is-permissive", PA_DISABLE, [], conn(None), True, peers=(strict(), strict("shop", mode="DISABLE"))),
    C("port-permissive-under-workload-strict", PA_PORT, [], conn(None, port=8080), True, peers=(strict("shop", "o", app="orders", ports={8080: "PERMISSIVE"}),)),
    C("port-permissive-other-port-strict", PA_PORT, [], conn(None, port=9090), False, peers=(strict("shop", "o", app="orders", ports={8080: "PERMISSIVE"}),), policy="shop/converted_peer_authentication_o"),
    C("port-strict-under-permissive", PA_PORT, [], conn(None, port=8080), False, peers=(strict("shop", "o", "PERMISSIVE", app="orders", ports={8080: "STRICT"}),)),
    C("strict-then-allow-all", PA_STRICT, [allow("all", ALL)], conn(None), False, peers=(strict(),)),
    # --- the seed guide's scenario ---------------------------------------------------------
]
# fmt: on
SEED_POLICIES = [
    AP("shop", "deny-all", {}),
    AP(
        "shop",
        "orders-allow-web",
        {
            "selector": {"matchLabels": {"app": "orders"}},
            "rules": [
                {
                    "from": [{"source": {"principals": [WEB]}}],
                    "to": [{"operation": {"ports": ["8080"]}}],
                }
            ],
        },
    ),
]
# fmt: off
CASES += [
    C("seed-web-to-orders", SEED, SEED_POLICIES, conn(WEB), True, peers=(strict(),), policy="shop/orders-allow-web"),
    C("seed-probe-to-orders", SEED, SEED_POLICIES, conn("cluster.local/ns/shop/sa/probe"), False, peers=(strict(),), policy=None),
    C("seed-web-to-web", SEED, SEED_POLICIES, conn(WEB), False, workload=WEB_APP, peers=(strict(),)),
    C("seed-plaintext-to-orders", SEED, SEED_POLICIES, conn(None), False, peers=(strict(),)),
    C("seed-web-to-orders-other-port", SEED, SEED_POLICIES, conn(WEB, port=9090), False, peers=(strict(),)),
]
# fmt: on


def test_table_is_large_and_ids_unique() -> None:
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision(case: Case) -> None:
    store = build_store(case.policies, case.peers)
    decision = checked_decide(store, case.workload, case.conn)
    assert decision.allowed is case.allowed, f"{case.rule}: {decision}"
    if case.policy != UNSET:
        assert decision.policy == case.policy, decision
    assert decision.audit_matches == case.audit
    if case.dry_run_allowed != UNSET:
        assert decision.dry_run_matches == case.dry_run
        assert decision.dry_run_allowed is case.dry_run_allowed
