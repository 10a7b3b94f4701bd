"""The indexed, compiled, memoized ``decide`` agrees with the naive reference, always.

Random policies in model form (including empty matches, empty clauses, groups that
can never match, every field and string form, IPv4 and IPv6) are checked against
``reference_decide``, which follows ztunnel's ``rbac.rs`` line by line.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.authz._compiled import CompiledPolicy
from ambient.authz.evaluate import Connection, Workload, evaluate_uncached
from ambient.authz.model import (
    Action,
    Authorization,
    Group,
    Match,
    MatchKind,
    Rules,
    Scope,
    ServiceAccountMatch,
    StringMatch,
)
from ambient.authz.peerauth import Mode, PeerAuthentication
from ambient.authz.reference import authorization_matches
from ambient.authz.store import PolicyStore

from .helpers import ROOT, checked_decide

NAMESPACES = ["shop", "web", "dev"]
ACCOUNTS = ["web", "orders", "probe"]
DOMAINS = ["cluster.local", "other.td"]
PRINCIPALS = [f"{td}/ns/{ns}/sa/{sa}" for td in DOMAINS for ns in NAMESPACES for sa in ACCOUNTS]
NETWORKS = [
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.1/32",
    "10.1.0.0/16",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8::1/128",
    "::/0",
]
ADDRESSES = ["10.0.0.1", "10.0.0.7", "10.1.2.3", "192.168.1.1", "2001:db8::1", "2001:db9::5"]
ADDRESSES += ["::ffff:10.0.0.1"]
PORTS = [80, 443, 8080, 9090]


@st.composite
def string_matches(draw: st.DrawFn, values: list[str]) -> StringMatch:
    value = draw(st.sampled_from(values))
    kind = draw(st.sampled_from(list(MatchKind)))
    if kind is MatchKind.PRESENCE:
        return StringMatch(kind)
    if kind is MatchKind.EXACT:
        return StringMatch(kind, value)
    cut = draw(st.integers(1, len(value)))
    return StringMatch(kind, value[:cut] if kind is MatchKind.PREFIX else value[-cut:])


networks = st.sampled_from(NETWORKS).map(ipaddress.ip_network)
accounts = st.builds(ServiceAccountMatch, st.sampled_from(NAMESPACES), st.sampled_from(ACCOUNTS))
FIELDS: dict[str, st.SearchStrategy[object]] = {
    "namespaces": string_matches(NAMESPACES),
    "service_accounts": accounts,
    "principals": string_matches(PRINCIPALS),
    "source_ips": networks,
    "destination_ips": networks,
    "destination_ports": st.sampled_from(PORTS),
}


@st.composite
def matches(draw: st.DrawFn) -> Match:
    """A match with zero to three fields set (sparse, so that matches happen)."""
    names = [*FIELDS, *(f"not_{name}" for name in FIELDS)]
    chosen = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    values = {
        name: tuple(draw(st.lists(FIELDS[name.removeprefix("not_")], min_size=1, max_size=2)))
        for name in chosen
    }
    return Match(**values)  # type: ignore[arg-type]


groups = st.lists(st.lists(matches(), max_size=3).map(lambda ms: Rules(tuple(ms))), max_size=3).map(
    lambda rs: Group(tuple(rs))
)
selectors = st.dictionaries(
    st.sampled_from(["app", "version"]), st.sampled_from(["orders", "web", "v1"]), max_size=2
).map(lambda d: tuple(sorted(d.items())))


@st.composite
def authorizations(draw: st.DrawFn, index: int) -> Authorization:
    scope = draw(st.sampled_from(list(Scope)))
    namespace = ROOT if scope is Scope.GLOBAL else draw(st.sampled_from([*NAMESPACES, ROOT]))
    return Authorization(
        name=f"p{index}",
        namespace=namespace,
        scope=scope,
        action=draw(st.sampled_from(list(Action))),
        groups=tuple(draw(st.lists(groups, max_size=3))),
        dry_run=draw(st.booleans()),
        selector=draw(selectors) if scope is Scope.WORKLOAD_SELECTOR else None,
    )


@st.composite
def peer_authentications(draw: st.DrawFn, index: int) -> PeerAuthentication:
    namespace = draw(st.sampled_from([*NAMESPACES, ROOT]))
    selector = draw(st.one_of(st.none(), selectors.filter(bool)))
    ports: tuple[tuple[int, Mode], ...] = ()
    if selector is not None:
        ports = tuple(
            draw(st.dictionaries(st.sampled_from(PORTS), st.sampled_from(list(Mode)))).items()
        )
    return PeerAuthentication(
        f"pa{index}",
        namespace,
        draw(st.sampled_from(list(Mode))),
        selector,
        tuple(sorted(ports)),
        float(draw(st.integers(0, 3))),
    )


workloads = st.builds(
    Workload,
    st.sampled_from([*NAMESPACES, ROOT]),
    st.dictionaries(st.sampled_from(["app", "version"]), st.sampled_from(["orders", "web", "v1"])),
)
identities = st.one_of(st.none(), st.sampled_from(PRINCIPALS).map(lambda p: f"spiffe://{p}"))
addresses = st.sampled_from(ADDRESSES)
ports = st.sampled_from([*PORTS, 12345, 23456])
connections = st.builds(Connection.of, identities, addresses, addresses, ports)


@st.composite
def connection_lists(draw: st.DrawFn) -> list[Connection]:
    """Connections that differ from earlier ones in one attribute (exercises the memo)."""
    out = [draw(connections)]
    for _ in range(draw(st.integers(0, 7))):
        c = draw(st.sampled_from(out))
        identity, src, dst, port = (
            c.source_identity,
            str(c.source_ip),
            str(c.destination_ip),
            c.destination_port,
        )
        which = draw(st.integers(0, 3))
        if which == 0:
            identity = draw(identities)
        elif which == 1:
            src = draw(addresses)
        elif which == 2:
            dst = draw(addresses)
        else:
            port = draw(ports)
        out.append(Connection.of(identity, src, dst, port))
    return out


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Authorization], list[PeerAuthentication]]:
    count = draw(st.integers(0, 8))
    policies = [draw(authorizations(i)) for i in range(count)]
    peers = [draw(peer_authentications(i)) for i in range(draw(st.integers(0, 3)))]
    return policies, peers


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(worlds(), workloads, connection_lists())
def test_decide_matches_reference(
    world: tuple[list[Authorization], list[PeerAuthentication]],
    workload: Workload,
    conns: list[Connection],
) -> None:
    policies, peers = world
    store = PolicyStore(ROOT)
    for policy in policies:
        store.put_authorization(policy)
    for peer in peers:
        store.put_peer_authentication(peer)
    for connection in conns:
        decision = checked_decide(store, workload, connection)
        assert evaluate_uncached(store.compiled_for(workload), connection) == decision
    if policies:  # removal invalidates what was compiled and memoized
        store.remove_authorization(policies[0].namespace, policies[0].name)
        for connection in conns:
            checked_decide(store, workload, connection)


@SETTINGS
@given(authorizations(0), connections)
def test_compiled_policy_matches_reference(policy: Authorization, connection: Connection) -> None:
    assert CompiledPolicy(policy).matches(connection) == authorization_matches(policy, connection)
