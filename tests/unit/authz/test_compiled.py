"""Targeted checks of the compiled fast path: indexes, ordering and the verdict memo."""

from __future__ import annotations

import pytest

from ambient.authz.evaluate import Connection, Workload, decide

from .helpers import (
    AP,
    ORDERS,
    PA,
    WEB,
    authorization,
    build_store,
    checked_decide,
    conn,
    peer_authentication,
)


def test_first_policy_in_key_order_decides_across_buckets() -> None:
    # "b" is filed under port 8080, "a" and "c" under "any": "b" must still win over "c".
    store = build_store(
        [
            AP(
                "shop",
                "a",
                {
                    "action": "DENY",
                    "rules": [{"from": [{"source": {"ipBlocks": ["192.168.0.0/16"]}}]}],
                },
            ),
            AP(
                "shop",
                "b",
                {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]},
            ),
            AP(
                "shop",
                "c",
                {
                    "action": "DENY",
                    "rules": [{"from": [{"source": {"notIpBlocks": ["192.168.0.0/16"]}}]}],
                },
            ),
        ]
    )
    assert checked_decide(store, ORDERS, conn()).policy == "shop/b"


def test_memo_distinguishes_port_level_mtls_ports() -> None:
    store = build_store(
        peers=[
            PA(
                "shop",
                "orders",
                {
                    "selector": {"matchLabels": {"app": "orders"}},
                    "mtls": {"mode": "STRICT"},
                    "portLevelMtls": {8080: {"mode": "PERMISSIVE"}},
                },
            )
        ]
    )
    assert checked_decide(store, ORDERS, conn(None, port=8080)).allowed
    assert not checked_decide(store, ORDERS, conn(None, port=9090)).allowed
    assert checked_decide(store, ORDERS, conn(None, port=8080)).allowed


def test_memo_distinguishes_addresses_by_policy_cidrs() -> None:
    rules = [{"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}]}]
    store = build_store([AP("shop", "lan", {"rules": rules})])
    assert checked_decide(store, ORDERS, conn(src="10.0.0.9")).allowed
    assert not checked_decide(store, ORDERS, conn(src="10.0.1.9")).allowed
    assert checked_decide(store, ORDERS, conn(src="10.0.0.200")).allowed


def test_principal_prefix_inside_the_namespace_segment() -> None:
    rules = [{"from": [{"source": {"principals": ["cluster.local/ns/sh*"]}}]}]
    store = build_store([AP("shop", "sh", {"rules": rules})])
    assert checked_decide(store, ORDERS, conn("cluster.local/ns/shop/sa/web")).allowed
    assert not checked_decide(store, ORDERS, conn("cluster.local/ns/web/sa/shop")).allowed


def test_principal_prefix_with_complete_namespace() -> None:
    rules = [{"from": [{"source": {"principals": ["cluster.local/ns/shop/*"]}}]}]
    store = build_store([AP("shop", "p", {"rules": rules})])
    assert checked_decide(store, ORDERS, conn("cluster.local/ns/shop/sa/x")).allowed
    assert not checked_decide(store, ORDERS, conn("cluster.local/ns/shopping/sa/x")).allowed


def test_compiled_sets_are_cached_per_namespace_and_labels() -> None:
    store = build_store([AP("shop", "allow-all", {"rules": [{}]})])
    first = store.compiled_for(ORDERS)
    assert store.compiled_for(Workload("shop", {"version": "v1", "app": "orders"})) is first
    assert store.compiled_for(Workload("shop", {"app": "web"})) is not first


def test_changes_invalidate_only_what_they_can_affect() -> None:
    store = build_store([AP("shop", "allow-all", {"rules": [{}]})])
    shop = store.compiled_for(ORDERS)
    other = store.compiled_for(Workload("web", {}))
    store.put_authorization(
        build_store([AP("web", "x", {})]).compiled_for(Workload("web", {})).policies[0]
    )
    assert store.compiled_for(ORDERS) is shop
    assert store.compiled_for(Workload("web", {})) is not other
    assert not decide(store, Workload("web", {}), conn()).allowed
    store.put_authorization(
        authorization(AP("istio-system", "deny", {"action": "DENY", "rules": [{}]}))
    )
    assert store.compiled_for(ORDERS) is not shop
    assert not decide(store, ORDERS, conn()).allowed
    store.remove_authorization("istio-system", "deny")
    assert decide(store, ORDERS, conn()).allowed


def test_peer_authentication_changes_invalidate() -> None:
    store = build_store()
    assert decide(store, ORDERS, conn(None)).allowed
    store.put_peer_authentication(
        peer_authentication(PA("istio-system", "default", {"mtls": {"mode": "STRICT"}}))
    )
    assert not decide(store, ORDERS, conn(None)).allowed
    store.remove_peer_authentication("istio-system", "default")
    assert decide(store, ORDERS, conn(None)).allowed


def test_replacing_a_policy_by_name() -> None:
    store = build_store([AP("shop", "p", {})])
    assert not decide(store, ORDERS, conn()).allowed
    store.put_authorization(authorization(AP("shop", "p", {"rules": [{}]})))
    assert decide(store, ORDERS, conn()).allowed
    assert len(store) == 1


@pytest.mark.parametrize(
    ("identity", "port"),
    [
        ("cluster.local/ns/shop/sa/web", 8080),  # no spiffe:// scheme
        ("spiffe://cluster.local/ns/shop", 8080),
        ("spiffe://cluster.local/ns//sa/web", 8080),
        ("spiffe://cluster.local/namespace/shop/sa/web", 8080),
        ("spiffe://cluster.local/ns/shop/sa/web", 70000),
        ("spiffe://cluster.local/ns/shop/sa/web", -1),
    ],
)
def test_malformed_connections_are_refused(identity: str, port: int) -> None:
    with pytest.raises(ValueError):
        Connection.of(identity, "10.0.0.1", "10.0.0.2", port)


def test_connection_derives_peer_fields() -> None:
    c = Connection.of("spiffe://td/ns/shop/sa/web", "::ffff:10.0.0.1", "10.0.0.2", 80)
    assert (c.principal, c.source_namespace, c.service_account) == (
        "td/ns/shop/sa/web",
        "shop",
        ("shop", "web"),
    )
    assert str(c.source_ip) == "10.0.0.1"
    plain = Connection.of(None, "10.0.0.1", "10.0.0.2", 80)
    assert (plain.principal, plain.source_namespace, plain.service_account) == (None, None, None)


def test_rule_with_mixed_from_entries_is_found_by_either_key() -> None:
    sources = [{"source": {"principals": [WEB]}}, {"source": {"ipBlocks": ["10.9.0.0/16"]}}]
    store = build_store([AP("shop", "d", {"action": "DENY", "rules": [{"from": sources}]})])
    probe = "cluster.local/ns/monitoring/sa/probe"
    assert not checked_decide(store, ORDERS, conn(WEB, src="10.0.0.1")).allowed
    assert not checked_decide(store, ORDERS, conn(probe, src="10.9.1.1")).allowed
    assert not checked_decide(store, ORDERS, conn(None, src="10.9.1.1")).allowed
    assert checked_decide(store, ORDERS, conn(probe, src="10.0.0.1")).allowed


def test_not_namespaces_entries_are_ored() -> None:
    # Outside "web" OR outside "dev": only a peer in both would escape; none is.
    sources = [{"source": {"notNamespaces": ["web"]}}, {"source": {"notNamespaces": ["dev"]}}]
    store = build_store([AP("shop", "d", {"action": "DENY", "rules": [{"from": sources}]})])
    assert not checked_decide(store, ORDERS, conn("cluster.local/ns/web/sa/a")).allowed
    assert not checked_decide(store, ORDERS, conn("cluster.local/ns/dev/sa/a")).allowed
    assert not checked_decide(store, ORDERS, conn(None)).allowed


def test_not_namespaces_across_clauses_are_anded() -> None:
    rule = {
        "from": [{"source": {"notNamespaces": ["web"]}}],
        "when": [{"key": "source.namespace", "notValues": ["dev"]}],
    }
    store = build_store([AP("shop", "d", {"action": "DENY", "rules": [rule]})])
    assert checked_decide(store, ORDERS, conn("cluster.local/ns/web/sa/a")).allowed
    assert checked_decide(store, ORDERS, conn("cluster.local/ns/dev/sa/a")).allowed
    assert not checked_decide(store, ORDERS, conn("cluster.local/ns/shop/sa/a")).allowed
    assert not checked_decide(store, ORDERS, conn(None)).allowed
