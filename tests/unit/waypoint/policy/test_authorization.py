"""L7 AuthorizationPolicy at the waypoint: selection, order, and every field, as tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from ambient.authz.translate import PolicyError
from ambient.frozen import FrozenMap
from ambient.waypoint.model import Downstream, RequestHead, RequestPrincipal, Target
from ambient.waypoint.policy.authorization import (
    L7Policy,
    WaypointAuthorizer,
    compile_authorization_policy,
)
from ambient.waypoint.policy.targets import ServiceRef, WaypointRef
from tests.unit.waypoint.policy.helpers import peer, request, target

WAYPOINT = WaypointRef("shop", "waypoint")
SERVICE_REF = {"kind": "Service", "group": "", "name": "orders"}
GATEWAY_REF = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}


def policy(
    rules: object = None,
    action: str = "ALLOW",
    refs: object = None,
    name: str = "p",
    ns: str = "shop",
    annotations: Mapping[str, object] | None = None,
) -> L7Policy:
    spec: dict[str, object] = {"action": action, "targetRefs": refs or [SERVICE_REF]}
    if rules is not None:
        spec["rules"] = rules
    compiled = compile_authorization_policy(name, ns, spec, annotations)
    assert compiled.policy is not None
    return compiled.policy


def jwt(iss: str = "https://idp", sub: str = "alice", **claims: object) -> RequestPrincipal:
    aud = claims.get("aud", ())
    return RequestPrincipal(
        f"{iss}/{sub}",
        iss,
        sub,
        FrozenMap({"iss": iss, "sub": sub, **claims}),
        audiences=(aud,) if isinstance(aud, str) else tuple(aud),  # type: ignore[arg-type]
        presenter=str(claims.get("azp", "")),
    )


def allowed(
    rule: Mapping[str, object],
    req: RequestHead | None = None,
    down: Downstream | None = None,
    principal: RequestPrincipal | None = None,
    tgt: Target | None = None,
) -> bool:
    authz = WaypointAuthorizer([policy([rule])], WAYPOINT)
    verdict = authz.check(tgt or target(), down or peer(), req or request(), principal)
    return verdict.allowed


def src(**fields: object) -> dict[str, object]:
    return {"from": [{"source": fields}]}


def op(**fields: object) -> dict[str, object]:
    return {"to": [{"operation": fields}]}


def when(
    key: str, values: list[str] | None = None, not_values: list[str] | None = None
) -> dict[str, object]:
    cond: dict[str, object] = {"key": key}
    if values:
        cond["values"] = values
    if not_values:
        cond["notValues"] = not_values
    return {"when": [cond]}


WEB = peer("shop", "web")
ADMIN = peer("ops", "admin", ip="10.1.2.3")
FOREIGN = peer("shop", "web", td="other.local")
NO_ID = Downstream(None, peer().source_ip)

# (rule, request, downstream, jwt, allowed)
FIELD_CASES: list[
    tuple[str, dict[str, object], RequestHead, Downstream, RequestPrincipal | None, bool]
] = [
    (
        "principal exact",
        src(principals=["cluster.local/ns/shop/sa/web"]),
        request(),
        WEB,
        None,
        True,
    ),
    (
        "principal other",
        src(principals=["cluster.local/ns/shop/sa/web"]),
        request(),
        ADMIN,
        None,
        False,
    ),
    ("principal prefix", src(principals=["cluster.local/ns/shop/*"]), request(), WEB, None, True),
    ("principal suffix", src(principals=["*/sa/admin"]), request(), ADMIN, None, True),
    ("principal any", src(principals=["*"]), request(), WEB, None, True),
    ("principal any, no id", src(principals=["*"]), request(), NO_ID, None, False),
    (
        "notPrincipals",
        src(notPrincipals=["cluster.local/ns/shop/sa/web"]),
        request(),
        WEB,
        None,
        False,
    ),
    (
        "notPrincipals, other",
        src(notPrincipals=["cluster.local/ns/shop/sa/web"]),
        request(),
        ADMIN,
        None,
        True,
    ),
    ("notPrincipals, no id", src(notPrincipals=["*"]), request(), NO_ID, None, True),
    ("namespaces", src(namespaces=["ops"]), request(), ADMIN, None, True),
    ("namespaces other", src(namespaces=["ops"]), request(), WEB, None, False),
    ("namespaces prefix", src(namespaces=["op*"]), request(), ADMIN, None, True),
    ("notNamespaces", src(notNamespaces=["ops"]), request(), ADMIN, None, False),
    ("serviceAccounts bare", src(serviceAccounts=["web"]), request(), WEB, None, True),
    ("serviceAccounts ns/sa", src(serviceAccounts=["ops/admin"]), request(), ADMIN, None, True),
    ("serviceAccounts other ns", src(serviceAccounts=["admin"]), request(), ADMIN, None, False),
    ("notServiceAccounts", src(notServiceAccounts=["shop/web"]), request(), WEB, None, False),
    ("ipBlocks", src(ipBlocks=["10.0.0.0/8"]), request(), ADMIN, None, True),
    ("ipBlocks miss", src(ipBlocks=["10.0.0.0/8"]), request(), WEB, None, False),
    ("notIpBlocks", src(notIpBlocks=["10.0.0.0/8"]), request(), ADMIN, None, False),
    ("remoteIpBlocks = source ip", src(remoteIpBlocks=["10.1.2.3"]), request(), ADMIN, None, True),
    (
        "remoteIpBlocks ignores XFF by default",
        src(remoteIpBlocks=["1.2.3.4"]),
        request(x_forwarded_for="1.2.3.4"),
        ADMIN,
        None,
        False,
    ),
    ("notRemoteIpBlocks", src(notRemoteIpBlocks=["10.1.2.3"]), request(), ADMIN, None, False),
    ("requestPrincipals any", src(requestPrincipals=["*"]), request(), WEB, jwt(), True),
    ("requestPrincipals any, no jwt", src(requestPrincipals=["*"]), request(), WEB, None, False),
    (
        "requestPrincipals any, empty sub",
        src(requestPrincipals=["*"]),
        request(),
        WEB,
        jwt(sub=""),
        False,
    ),
    (
        "requestPrincipals exact",
        src(requestPrincipals=["https://idp/alice"]),
        request(),
        WEB,
        jwt(),
        True,
    ),
    (
        "requestPrincipals exact miss",
        src(requestPrincipals=["https://idp/bob"]),
        request(),
        WEB,
        jwt(),
        False,
    ),
    (
        "requestPrincipals iss/*",
        src(requestPrincipals=["https://idp/*"]),
        request(),
        WEB,
        jwt(),
        True,
    ),
    (
        "requestPrincipals other iss/*",
        src(requestPrincipals=["https://x/*"]),
        request(),
        WEB,
        jwt(),
        False,
    ),
    ("requestPrincipals */sub", src(requestPrincipals=["*/alice"]), request(), WEB, jwt(), True),
    (
        "requestPrincipals *idp/sub",
        src(requestPrincipals=["*idp/alice"]),
        request(),
        WEB,
        jwt(),
        True,
    ),
    (
        "requestPrincipals iss prefix",
        src(requestPrincipals=["corp*"]),
        request(),
        WEB,
        jwt("corp-idp"),
        True,
    ),
    # istiod splits at the last "/": "https://id*" is issuer "https:/" + subject prefix "id"
    (
        "requestPrincipals split quirk",
        src(requestPrincipals=["https://id*"]),
        request(),
        WEB,
        jwt(),
        False,
    ),
    ("requestPrincipals suffix", src(requestPrincipals=["*ice"]), request(), WEB, jwt(), True),
    (
        "requestPrincipals sub prefix",
        src(requestPrincipals=["https://idp/al*"]),
        request(),
        WEB,
        jwt(),
        True,
    ),
    ("notRequestPrincipals", src(notRequestPrincipals=["*"]), request(), WEB, None, True),
    ("notRequestPrincipals, jwt", src(notRequestPrincipals=["*"]), request(), WEB, jwt(), False),
    ("methods", op(methods=["GET", "HEAD"]), request(method="GET"), WEB, None, True),
    ("methods miss", op(methods=["GET"]), request(method="POST"), WEB, None, False),
    ("methods case-sensitive", op(methods=["get"]), request(method="GET"), WEB, None, False),
    ("notMethods", op(notMethods=["DELETE"]), request(method="DELETE"), WEB, None, False),
    ("paths exact", op(paths=["/health"]), request("/health"), WEB, None, True),
    ("paths ignore query", op(paths=["/health"]), request("/health?x=1"), WEB, None, True),
    ("paths prefix", op(paths=["/api/*"]), request("/api/v1/x"), WEB, None, True),
    ("paths normalized", op(paths=["/api/*"]), request("/api/../admin"), WEB, None, False),
    (
        "notPaths normalized",
        op(notPaths=["/admin*"]),
        request("/api/..%2F../admin"),
        WEB,
        None,
        True,
    ),
    ("notPaths dot-dot", op(notPaths=["/admin*"]), request("/api/../admin"), WEB, None, False),
    ("notPaths backslash", op(notPaths=["/admin/*"]), request("/admin\\x"), WEB, None, False),
    ("notPaths encoded", op(notPaths=["/admin/*"]), request("/%61dmin/x"), WEB, None, False),
    (
        "paths template",
        op(paths=["/orders/{*}/items"]),
        request("/orders/7/items"),
        WEB,
        None,
        True,
    ),
    (
        "paths template miss",
        op(paths=["/orders/{*}/items"]),
        request("/orders/7/8/items"),
        WEB,
        None,
        False,
    ),
    ("paths {**}", op(paths=["/files/{**}"]), request("/files/a/b.txt"), WEB, None, True),
    ("hosts exact", op(hosts=["orders"]), request(authority="orders"), WEB, None, True),
    ("hosts any port", op(hosts=["orders"]), request(authority="orders:8080"), WEB, None, True),
    ("hosts case", op(hosts=["Orders.Shop"]), request(authority="ORDERS.shop:80"), WEB, None, True),
    (
        "hosts with port",
        op(hosts=["orders:9090"]),
        request(authority="orders:8080"),
        WEB,
        None,
        False,
    ),
    (
        "hosts with port ok",
        op(hosts=["orders:8080"]),
        request(authority="orders:8080"),
        WEB,
        None,
        True,
    ),
    (
        "hosts suffix",
        op(hosts=["*.shop.svc.cluster.local"]),
        request(authority="orders.shop.svc.cluster.local:8080"),
        WEB,
        None,
        True,
    ),
    ("notHosts", op(notHosts=["orders"]), request(authority="orders:8080"), WEB, None, False),
    ("ports", op(ports=["8080"]), request(), WEB, None, True),
    ("ports miss", op(ports=["9090"]), request(), WEB, None, False),
    ("notPorts", op(notPorts=["8080"]), request(), WEB, None, False),
    ("header", when("request.headers[x-env]", ["prod"]), request(x_env="prod"), WEB, None, True),
    (
        "header miss",
        when("request.headers[x-env]", ["prod"]),
        request(x_env="dev"),
        WEB,
        None,
        False,
    ),
    ("header absent", when("request.headers[x-env]", ["prod"]), request(), WEB, None, False),
    ("header presence", when("request.headers[X-Env]", ["*"]), request(x_env=""), WEB, None, True),
    (
        "header prefix",
        when("request.headers[user-agent]", ["curl/*"]),
        request(user_agent="curl/8"),
        WEB,
        None,
        True,
    ),
    (
        "header notValues absent",
        when("request.headers[x-env]", not_values=["prod"]),
        request(),
        WEB,
        None,
        True,
    ),
    ("source.ip", when("source.ip", ["10.1.0.0/16"]), request(), ADMIN, None, True),
    ("remote.ip", when("remote.ip", ["10.1.2.3"]), request(), ADMIN, None, True),
    ("source.namespace", when("source.namespace", ["ops"]), request(), ADMIN, None, True),
    (
        "source.principal",
        when("source.principal", ["cluster.local/ns/ops/sa/admin"]),
        request(),
        ADMIN,
        None,
        True,
    ),
    (
        "source.serviceAccount",
        when("source.serviceAccount", ["ops/admin"]),
        request(),
        ADMIN,
        None,
        True,
    ),
    (
        "source.trustDomain",
        when("source.trustDomain", ["other.local"]),
        request(),
        FOREIGN,
        None,
        True,
    ),
    (
        "request.auth.principal",
        when("request.auth.principal", ["https://idp/alice"]),
        request(),
        WEB,
        jwt(),
        True,
    ),
    (
        "request.auth.audiences",
        when("request.auth.audiences", ["orders"]),
        request(),
        WEB,
        jwt(aud=["x", "orders"]),
        True,
    ),
    (
        "request.auth.audiences miss",
        when("request.auth.audiences", ["orders"]),
        request(),
        WEB,
        jwt(aud="x"),
        False,
    ),
    (
        "request.auth.presenter",
        when("request.auth.presenter", ["cli"]),
        request(),
        WEB,
        jwt(azp="cli"),
        True,
    ),
    (
        "claims string",
        when("request.auth.claims[role]", ["admin"]),
        request(),
        WEB,
        jwt(role="admin"),
        True,
    ),
    (
        "claims list",
        when("request.auth.claims[groups]", ["ops"]),
        request(),
        WEB,
        jwt(groups=["dev", "ops"]),
        True,
    ),
    (
        "claims list miss",
        when("request.auth.claims[groups]", ["qa"]),
        request(),
        WEB,
        jwt(groups=["dev"]),
        False,
    ),
    (
        "claims nested",
        when("request.auth.claims[org][team]", ["pay"]),
        request(),
        WEB,
        jwt(org={"team": "pay"}),
        True,
    ),
    (
        "claims non-string",
        when("request.auth.claims[admin]", ["true"]),
        request(),
        WEB,
        jwt(admin=True),
        False,
    ),
    ("claims no jwt", when("request.auth.claims[role]", ["admin"]), request(), WEB, None, False),
    (
        "claims notValues no jwt",
        when("request.auth.claims[role]", not_values=["admin"]),
        request(),
        WEB,
        None,
        True,
    ),
    ("destination.ip", when("destination.ip", ["127.20.0.0/16"]), request(), WEB, None, True),
    ("destination.port", when("destination.port", ["8080"]), request(), WEB, None, True),
    ("destination.port miss", when("destination.port", ["80"]), request(), WEB, None, False),
    ("connection.sni never set", when("connection.sni", ["*"]), request(), WEB, None, False),
    (
        "connection.sni notValues",
        when("connection.sni", not_values=["x.example"]),
        request(),
        WEB,
        None,
        True,
    ),
    (
        "values and notValues",
        when("request.headers[x]", ["a*"], ["ab"]),
        request(x="ab"),
        WEB,
        None,
        False,
    ),
    ("empty rule", {}, request(), NO_ID, None, True),
    (
        "every clause must hold",
        {**src(namespaces=["shop"]), **op(methods=["GET"]), **when("request.headers[x]", ["1"])},
        request(x="1", method="GET"),
        WEB,
        None,
        True,
    ),
    (
        "one clause fails",
        {**src(namespaces=["shop"]), **op(methods=["GET"]), **when("request.headers[x]", ["1"])},
        request(x="2", method="GET"),
        WEB,
        None,
        False,
    ),
]


@pytest.mark.parametrize(
    ("rule", "req", "down", "principal", "ok"),
    [case[1:] for case in FIELD_CASES],
    ids=[case[0] for case in FIELD_CASES],
)
def test_fields(
    rule: dict[str, object],
    req: RequestHead,
    down: Downstream,
    principal: RequestPrincipal | None,
    ok: bool,
) -> None:
    assert allowed(rule, req, down, principal) is ok


def test_entries_of_a_clause_are_ored() -> None:
    rule = {"from": [{"source": {"namespaces": ["ops"]}}, {"source": {"namespaces": ["shop"]}}]}
    assert allowed(rule, down=WEB) and allowed(rule, down=ADMIN)
    assert not allowed(rule, down=peer("billing", "x"))


def test_remote_ip_with_trusted_proxies() -> None:
    authz = WaypointAuthorizer(
        [policy([src(remoteIpBlocks=["72.9.5.6"])])], WAYPOINT, num_trusted_proxies=2
    )
    req = request(x_forwarded_for="56.5.6.7, 72.9.5.6, 98.1.2.3")
    assert authz.check(target(), WEB, req, None).allowed
    short = request(x_forwarded_for="72.9.5.6")  # fewer hops than trusted: the peer address
    assert not authz.check(target(), WEB, short, None).allowed


# ---- selection ----------------------------------------------------------------------------

DENY_ALL: list[dict[str, object]] = [{}]


@pytest.mark.parametrize(
    ("refs", "ns", "tgt", "applies"),
    [
        ([SERVICE_REF], "shop", target("orders"), True),
        ([SERVICE_REF], "shop", target("billing"), False),
        ([SERVICE_REF], "other", target("orders"), False),  # only the service's namespace
        ([{**SERVICE_REF, "group": "core"}], "shop", target("orders"), True),
        ([{**SERVICE_REF, "namespace": "other"}], "shop", target("orders"), False),
        ([SERVICE_REF], "shop", target(None), False),  # a workload target
        ([GATEWAY_REF], "shop", target("billing"), True),
        ([GATEWAY_REF], "shop", target(None), True),
        ([GATEWAY_REF], "other", target("orders"), False),
        ([{**GATEWAY_REF, "name": "other-waypoint"}], "shop", target("orders"), False),
        ([{**GATEWAY_REF, "group": ""}], "shop", target("orders"), False),
        (
            [
                {
                    "kind": "GatewayClass",
                    "group": "gateway.networking.k8s.io",
                    "name": "istio-waypoint",
                }
            ],
            "istio-system",
            target("orders"),
            True,
        ),
        (
            [
                {
                    "kind": "GatewayClass",
                    "group": "gateway.networking.k8s.io",
                    "name": "istio-waypoint",
                }
            ],
            "shop",
            target("orders"),
            False,
        ),
        (
            [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": "ext"}],
            "shop",
            target("orders"),
            False,
        ),
    ],
)
def test_selection(refs: list[dict[str, str]], ns: str, tgt: Target, applies: bool) -> None:
    authz = WaypointAuthorizer([policy(DENY_ALL, "DENY", refs, ns=ns)], WAYPOINT)
    assert authz.check(tgt, WEB, request(), None).allowed is not applies


def test_service_entry_selection_through_resolver() -> None:
    refs = [{"kind": "ServiceEntry", "group": "networking.istio.io", "name": "ext"}]
    authz = WaypointAuthorizer(
        [policy(DENY_ALL, "DENY", refs)],
        WAYPOINT,
        service_of=lambda t: (
            ServiceRef("shop", "ext", "ServiceEntry") if t.hostname == "api.ext.com" else None
        ),
    )
    ext = Target("shop", "api.ext.com", target().address, 443)
    assert not authz.check(ext, WEB, request(), None).allowed
    assert authz.check(target(), WEB, request(), None).allowed


def test_policies_without_target_refs_never_apply() -> None:
    spec: dict[str, object] = {"action": "DENY", "rules": [{}]}
    assert compile_authorization_policy("ns-wide", "shop", spec).policy is None
    spec = {"action": "DENY", "selector": {"matchLabels": {"app": "waypoint"}}, "rules": [{}]}
    assert compile_authorization_policy("sel", "shop", spec).policy is None


# ---- actions and order ----------------------------------------------------------------------


def test_no_policy_allows() -> None:
    verdict = WaypointAuthorizer([], WAYPOINT).check(target(), WEB, request(), None)
    assert verdict.allowed and verdict.policy is None


def test_allow_without_rules_denies_everything() -> None:
    authz = WaypointAuthorizer([policy(None, "ALLOW")], WAYPOINT)
    verdict = authz.check(target(), WEB, request(), None)
    assert not verdict.allowed and verdict.reason == "no ALLOW policy matched"


def test_deny_wins_over_allow() -> None:
    allow = policy([{}], "ALLOW", name="allow-all")
    deny = policy([op(paths=["/admin*"])], "DENY", name="no-admin")
    authz = WaypointAuthorizer([allow, deny], WAYPOINT)
    assert authz.check(target(), WEB, request("/api"), None).policy == "shop/allow-all"
    verdict = authz.check(target(), WEB, request("/admin/x"), None)
    assert not verdict.allowed and verdict.policy == "shop/no-admin"


def test_any_allow_policy_may_allow() -> None:
    a = policy([src(namespaces=["ops"])], name="a")
    b = policy([src(namespaces=["shop"])], name="b")
    authz = WaypointAuthorizer([a, b], WAYPOINT)
    assert authz.check(target(), WEB, request(), None).policy == "shop/b"
    assert not authz.check(target(), peer("x", "y"), request(), None).allowed


def test_custom_fails_closed_with_warning() -> None:
    spec = {
        "action": "CUSTOM",
        "provider": {"name": "ext-authz"},
        "targetRefs": [SERVICE_REF],
        "rules": [op(paths=["/never"])],
    }
    compiled = compile_authorization_policy("custom", "shop", spec)
    assert compiled.policy is not None
    assert any("fail closed" in w for w in compiled.warnings)
    authz = WaypointAuthorizer([compiled.policy, policy([{}], "ALLOW")], WAYPOINT)
    verdict = authz.check(target(), WEB, request("/api"), None)
    assert not verdict.allowed and verdict.policy == "shop/custom"


def test_audit_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    authz = WaypointAuthorizer([policy([{}], "AUDIT", name="audit")], WAYPOINT)
    with caplog.at_level(logging.INFO, "ambient.waypoint.policy"):
        assert authz.check(target(), WEB, request("/x"), None).allowed
    assert any("audit shop/audit: matched GET" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("action", ["ALLOW", "DENY"])
def test_dry_run_only_logs(action: str, caplog: pytest.LogCaptureFixture) -> None:
    p = policy(
        [op(paths=["/nothing"])] if action == "ALLOW" else [{}],
        action,
        annotations={"istio.io/dry-run": "true"},
    )
    assert p.dry_run
    authz = WaypointAuthorizer([p], WAYPOINT)
    with caplog.at_level(logging.INFO, "ambient.waypoint.policy"):
        assert authz.check(target(), WEB, request("/x"), None).allowed
    expected = "would not allow" if action == "ALLOW" else "would deny"
    assert any(f"dry-run shop/p: {expected}" in r.getMessage() for r in caplog.records)


def test_bad_dry_run_annotation_is_refused() -> None:
    with pytest.raises(PolicyError, match="invalid boolean"):
        policy([{}], annotations={"istio.io/dry-run": "maybe"})


def test_invalid_policy_refused_with_path() -> None:
    spec = {
        "targetRefs": [SERVICE_REF],
        "rules": [{"from": [{"source": {"principals": ["spiffe://x/ns/a/sa/b"]}}]}],
    }
    with pytest.raises(PolicyError) as err:
        compile_authorization_policy("p", "shop", spec)
    assert err.value.path == "spec.rules[0].from[0].source.principals[0]"


def test_experimental_keys_fail_closed() -> None:
    key = "experimental.envoy.filters.network.mysql_proxy[db.table]"
    allow = compile_authorization_policy(
        "a", "shop", {"targetRefs": [SERVICE_REF], "rules": [when(key, ["[update]"])]}
    )
    assert any("fail closed" in w for w in allow.warnings)
    assert allow.policy is not None
    assert (
        not WaypointAuthorizer([allow.policy], WAYPOINT)
        .check(target(), WEB, request(), None)
        .allowed
    )
    deny = policy([when(key, ["[update]"])], "DENY")
    assert not WaypointAuthorizer([deny], WAYPOINT).check(target(), WEB, request(), None).allowed


# ---- TCP through the waypoint ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "rule", "down", "allowed_"),
    [
        ("ALLOW", src(namespaces=["shop"]), WEB, True),
        ("ALLOW", src(namespaces=["ops"]), WEB, False),
        ("ALLOW", {**src(namespaces=["shop"]), **op(methods=["GET"])}, WEB, False),  # HTTP: never
        ("ALLOW", src(requestPrincipals=["*"]), WEB, False),
        ("DENY", {**src(namespaces=["shop"]), **op(methods=["GET"])}, WEB, False),  # wider
        ("DENY", {**src(namespaces=["ops"]), **op(methods=["GET"])}, WEB, True),
        ("DENY", op(methods=["GET"]), WEB, False),  # nothing left: matches every connection
        ("DENY", when("request.headers[x]", ["1"]), WEB, False),
        ("DENY", op(ports=["9090"], paths=["/x"]), WEB, True),
        ("DENY", op(ports=["8080"], paths=["/x"]), WEB, False),
    ],
)
def test_check_connection(
    action: str, rule: dict[str, object], down: Downstream, allowed_: bool
) -> None:
    authz = WaypointAuthorizer([policy([rule], action)], WAYPOINT)
    assert authz.check_connection(target(), down).allowed is allowed_
