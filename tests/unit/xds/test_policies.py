"""Policies attached by name and PeerAuthentication as synthetic DENYs, as istiod does.

Cases follow istiod (istio/istio ``pilot/pkg/serviceregistry/ambient/authorization.go``
``convertPeerAuthentication``/``convertedSelectorPeerAuthentications``, ``policies.go``
static STRICT policy, ``workloads.go`` ``buildWorkloadPolicies``). The property test
checks the whole mechanism end to end: a ztunnel that sees only Istio's wire (no
extensions, policies attached by name, PeerAuthentication as DENY policies) reaches
the same verdict as ambient's label-based ``decide`` on every connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.authz.conn import Connection
from ambient.authz.conn import Workload as Target
from ambient.authz.evaluate import decide
from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    Match,
    MatchKind,
    Rules,
    Scope,
    StringMatch,
)
from ambient.authz.peerauth import Mode, PeerAuthentication
from ambient.authz.reference import authorization_matches
from ambient.authz.store import PolicyStore
from ambient.xds.codec import authorization_from_proto, authorization_to_proto
from ambient.xds.policies import (
    BY_NAME_SELECTOR,
    is_peer_authentication_policy,
    peer_authentication_to_authorizations,
    policies_by_name,
    static_strict_authorization,
    workload_policy_keys,
)
from ambient.xds.proto import authorization_pb2
from tests.unit.authz.test_differential import (
    authorizations,
    connections,
    peer_authentications,
    workloads,
)

ROOT = "istio-system"
STATIC = f"{ROOT}/istio_converted_static_strict"
CONVERTED = "shop/converted_peer_authentication_wl"
S, P, D, U = Mode.STRICT, Mode.PERMISSIVE, Mode.DISABLE, Mode.UNSET
NO_ID = StringMatch(MatchKind.PRESENCE)
ORDERS = Target("shop", {"app": "orders"})


def pa(level: str, mode: Mode, ports: dict[int, Mode] | None = None) -> PeerAuthentication:
    selector = (("app", "orders"),) if level == "wl" else None
    namespace = ROOT if level == "mesh" else "shop"
    return PeerAuthentication(
        level, namespace, mode, selector, tuple(sorted((ports or {}).items()))
    )


def strict_except(*ports: int, inherited: bool = False) -> tuple[Group, ...]:
    strict = Rules((Match(not_principals=(NO_ID,)),))
    exempt = [Rules((Match(not_destination_ports=(p,)),)) for p in ports]
    return (Group(tuple([*exempt, strict] if inherited else [strict, *exempt])),)


def strict_only(*ports: int) -> tuple[Group, ...]:
    return tuple(
        Group((Rules((Match(not_principals=(NO_ID,), destination_ports=(p,)),)),)) for p in ports
    )


@dataclass(frozen=True)
class Case:
    id: str
    policies: tuple[PeerAuthentication, ...]
    keys: tuple[str, ...]  # ORDERS' authorization_policies
    converted: tuple[Group, ...] | None  # groups of shop/converted_peer_authentication_wl


CASES = [
    Case("none", (), (), None),
    Case("mesh-strict", (pa("mesh", S),), (STATIC,), None),
    Case("mesh-permissive", (pa("mesh", P),), (), None),
    Case("namespace-permissive-over-mesh-strict", (pa("mesh", S), pa("ns", P)), (), None),
    Case("namespace-unset-inherits", (pa("mesh", S), pa("ns", U)), (STATIC,), None),
    Case("workload-strict", (pa("wl", S),), (STATIC,), None),
    Case("workload-strict-all-ports-strict", (pa("wl", S, {8080: S}),), (STATIC,), None),
    Case(
        "workload-strict-port-permissive",
        (pa("wl", S, {8080: P, 9090: D}),),
        (CONVERTED,),
        strict_except(8080, 9090),
    ),
    Case(
        "workload-permissive-port-strict",
        (pa("wl", P, {8080: S, 9090: P}),),
        (CONVERTED,),
        strict_only(8080),
    ),
    Case(
        "workload-disable-port-strict",
        (pa("ns", S), pa("wl", D, {8080: S})),
        (CONVERTED,),
        strict_only(8080),
    ),
    Case(
        "workload-unset-port-permissive-under-namespace-strict",
        (pa("ns", S), pa("wl", U, {8080: P})),
        (CONVERTED,),
        strict_except(8080, inherited=True),  # istiod merges the inherited STRICT last
    ),
    Case(
        "workload-unset-port-strict-under-permissive",
        (pa("mesh", P), pa("wl", U, {8080: S})),
        (CONVERTED,),
        strict_only(8080),
    ),
    # istiod: under an UNSET workload mode inheriting STRICT only PERMISSIVE opens a port
    Case(
        "workload-unset-port-disable-stays-strict",
        (pa("mesh", S), pa("wl", U, {8080: D})),
        (STATIC,),
        None,
    ),
    # deliberate difference: istiod references this policy but drops the STRICT port from
    # it (its condition for a STRICT mesh without namespace policy); here it is enforced
    Case(
        "workload-permissive-port-strict-under-mesh-strict",
        (pa("mesh", S), pa("wl", P, {8080: S})),
        (CONVERTED,),
        strict_only(8080),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_peer_authentication_as_istiod(case: Case) -> None:
    synthetic = {a.key: a for a in peer_authentication_to_authorizations(case.policies, ROOT)}
    expected = {STATIC} if case.policies else set()
    if case.converted is not None:
        expected.add(CONVERTED)
    assert set(synthetic) == expected
    if case.converted is not None:
        converted = synthetic[CONVERTED]
        assert (converted.scope, converted.action) == (Scope.WORKLOAD_SELECTOR, Action.DENY)
        assert converted.groups == case.converted
    store = PolicyStore(ROOT)
    for p in case.policies:
        store.put_peer_authentication(p)
    assert workload_policy_keys(store, "shop", ORDERS.labels) == case.keys
    # the synthetic policies enforce what the store resolves, port by port
    enforced = policies_by_name("shop", case.keys, synthetic)
    for port in (8080, 9090, 80):
        plaintext = Connection.of(None, "10.0.0.1", "10.0.0.2", port)
        denied = any(authorization_matches(p, plaintext) for p in enforced)
        assert denied == store.effective_mtls(ORDERS).strict_for(port), port
        mtls = Connection.of("spiffe://cluster.local/ns/a/sa/b", "10.0.0.1", "10.0.0.2", port)
        assert not any(authorization_matches(p, mtls) for p in enforced)


def test_static_strict_is_istiods() -> None:
    policy = static_strict_authorization(ROOT)
    assert policy.key == STATIC
    assert (policy.scope, policy.action, policy.dry_run) == (
        Scope.WORKLOAD_SELECTOR,
        Action.DENY,
        False,
    )
    assert policy.groups == (Group((Rules((Match(not_principals=(NO_ID,)),)),)),)
    assert policy.selector == BY_NAME_SELECTOR
    msg = authorization_to_proto(policy)
    assert list(msg.extensions) == []  # exactly what istiod sends
    assert authorization_from_proto(msg) == policy


def test_synthetic_names() -> None:
    assert is_peer_authentication_policy("istio_converted_static_strict")
    assert is_peer_authentication_policy("converted_peer_authentication_x")
    assert not is_peer_authentication_policy("allow-web")


def test_root_namespace_selector_peer_authentication_is_ignored() -> None:
    root_wl = PeerAuthentication("wl", ROOT, S, (("app", "orders"),), ((8080, P),))
    assert [a.name for a in peer_authentication_to_authorizations([root_wl], ROOT)] == [
        "istio_converted_static_strict"
    ]


def test_selector_policies_listed_by_name() -> None:
    def policy(ns: str, name: str, scope: Scope, selector: object = None) -> Authorization:
        return Authorization(name, ns, scope, Action.ALLOW, selector=selector)  # type: ignore[arg-type]

    policies = [
        policy(ROOT, "mesh", Scope.GLOBAL),
        policy("shop", "ns", Scope.NAMESPACE),
        policy("web", "other-ns", Scope.NAMESPACE),
        policy("shop", "b-orders", Scope.WORKLOAD_SELECTOR, (("app", "orders"),)),
        policy("shop", "a-all", Scope.WORKLOAD_SELECTOR, ()),
        policy(ROOT, "root-orders", Scope.WORKLOAD_SELECTOR, (("app", "orders"),)),
        policy("shop", "web-only", Scope.WORKLOAD_SELECTOR, (("app", "web"),)),
        policy("web", "elsewhere", Scope.WORKLOAD_SELECTOR, (("app", "orders"),)),
        policy("shop", "by-name", Scope.WORKLOAD_SELECTOR, BY_NAME_SELECTOR),
    ]
    store = PolicyStore(ROOT)
    for p in policies:
        store.put_authorization(p)
    keys = workload_policy_keys(store, "shop", ORDERS.labels)
    assert keys == ("istio-system/root-orders", "shop/a-all", "shop/b-orders")
    by_key = {p.key: p for p in policies}
    enforced = {p.key for p in policies_by_name("shop", [*keys, "shop/missing"], by_key)}
    assert enforced == {"istio-system/mesh", "shop/ns", *keys}


def _istio_view(policy: Authorization) -> Authorization:
    """What a ztunnel that ignores our extensions decodes from the wire."""
    msg = authorization_pb2.Authorization.FromString(
        authorization_to_proto(policy).SerializeToString()
    )
    del msg.extensions[:]
    return authorization_from_proto(msg)


def _ztunnel_allows(policies: list[Authorization], conn: Connection) -> bool:
    """istio/ztunnel ``assert_rbac``: dry-run policies never decide."""
    enforced = [p for p in policies if not p.dry_run]
    if any(p.action is Action.DENY and authorization_matches(p, conn) for p in enforced):
        return False
    allows = [p for p in enforced if p.action is Action.ALLOW]
    return not allows or any(authorization_matches(p, conn) for p in allows)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Authorization], list[PeerAuthentication]]:
    policies = [draw(authorizations(i)) for i in range(draw(st.integers(0, 6)))]
    peers = [draw(peer_authentications(i)) for i in range(draw(st.integers(0, 4)))]
    return policies, peers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), workloads, st.lists(connections, min_size=1, max_size=6))
def test_istio_wire_mechanism_decides_like_ambient(
    world: tuple[list[Authorization], list[PeerAuthentication]],
    workload: Target,
    conns: list[Connection],
) -> None:
    policies, peers = world
    store = PolicyStore(ROOT)
    for p in policies:
        store.put_authorization(p)
    for peer in peers:
        store.put_peer_authentication(peer)
    sent = [*store.authorizations(), *peer_authentication_to_authorizations(peers, ROOT)]
    on_wire = {p.key: _istio_view(p) for p in sent}
    keys = workload_policy_keys(store, workload.namespace, workload.labels)
    assert set(keys) <= set(on_wire)  # every listed name is sent
    enforced = policies_by_name(workload.namespace, keys, on_wire)
    ours = {p.key for p in store.applicable(workload.namespace, workload.labels)}
    assert {p.key for p in enforced if not is_peer_authentication_policy(p.name)} == ours
    for conn in conns:
        assert _ztunnel_allows(enforced, conn) == decide(store, workload, conn).allowed, conn
