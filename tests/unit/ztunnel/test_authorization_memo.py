"""The ztunnel's memo of L4 verdicts: the same answer as ``authorize``, forgotten exactly when
a push or a policy change could move it, never kept when AUDIT or dry-run policies matched."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.ztunnel.authorization import InboundConnection, MemoizedAuthorizer, authorize
from tests.unit.authz.helpers import AP, authorization
from tests.unit.state.test_proxy_state import pod

WEB = "spiffe://cluster.local/ns/shop/sa/web"
PROBE = "spiffe://cluster.local/ns/shop/sa/probe"
CALLER_IP = ipaddress.ip_address("127.10.0.9")


def deny_from(name: str, sa: str, *, labels: dict[str, str] | None = None) -> AP:
    spec: dict[str, object] = {
        "action": "DENY",
        "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/shop/sa/{sa}"]}}]}],
    }
    if labels is not None:
        spec["selector"] = {"matchLabels": labels}
    return AP("shop", name, spec)


def connection(
    state: ProxyState, identity: str | None = WEB, port: int = 8080
) -> InboundConnection:
    destination = state.workloads[pod(1).uid]
    return InboundConnection(identity, CALLER_IP, destination, destination.addresses[0], port)


@pytest.fixture
def state() -> ProxyState:
    s = ProxyState("node-1")
    s.apply([pod(1), pod(2)], [])
    return s


def test_a_repeated_connection_is_answered_from_the_memo(state: ProxyState) -> None:
    memo = MemoizedAuthorizer(state)
    assert memo(connection(state)).allowed
    assert len(memo) == 1
    assert memo(connection(state)).allowed
    assert len(memo) == 1
    assert memo(connection(state, PROBE)).allowed and len(memo) == 2


def test_a_pushed_deny_policy_takes_effect_on_the_next_connection(state: ProxyState) -> None:
    memo = MemoizedAuthorizer(state)
    assert memo(connection(state)).allowed
    state.apply([], [], [authorization(deny_from("no-web", "web"))])
    verdict = memo(connection(state))
    assert not verdict.allowed and "shop/no-web" in verdict.reason
    assert memo(connection(state, PROBE)).allowed
    state.apply([], [], policies_removed=[("AuthorizationPolicy", "shop/no-web")])
    assert memo(connection(state)).allowed


def test_a_policy_put_in_the_store_directly_takes_effect(state: ProxyState) -> None:
    """Not every path goes through ``ProxyState.apply``: the store's own revision counts."""
    memo = MemoizedAuthorizer(state)
    assert memo(connection(state)).allowed
    state.policies.put_authorization(authorization(deny_from("no-web", "web")))
    assert not memo(connection(state)).allowed


def test_a_label_change_moves_the_verdict(state: ProxyState) -> None:
    """A selector policy applies once the destination's labels match it (a workload push)."""
    state.apply([], [], [authorization(deny_from("locked", "web", labels={"locked": "yes"}))])
    memo = MemoizedAuthorizer(state)
    assert memo(connection(state)).allowed
    state.apply([replace(pod(1), labels=FrozenMap({"locked": "yes"}))], [])
    assert not memo(connection(state)).allowed
    state.apply([pod(1)], [])
    assert memo(connection(state)).allowed


def test_a_different_destination_object_is_never_answered_from_the_memo(state: ProxyState) -> None:
    """Only the very workload the verdict was computed for hits (not one of the same uid)."""
    state.apply([], [], [authorization(deny_from("locked", "web", labels={"locked": "yes"}))])
    memo = MemoizedAuthorizer(state)
    assert memo(connection(state)).allowed
    locked = replace(state.workloads[pod(1).uid], labels=FrozenMap({"locked": "yes"}))
    conn = replace(connection(state), destination=locked)
    assert not memo(conn).allowed


def test_the_memo_agrees_with_authorize_and_stays_bounded(state: ProxyState) -> None:
    state.apply([], [], [authorization(deny_from("no-web", "web"))])
    memo = MemoizedAuthorizer(state, limit=8)
    for port in range(8000, 8040):
        for identity in (WEB, PROBE, None):
            conn = connection(state, identity, port)
            assert memo(conn) == authorize(state, conn)
            assert memo(conn) == authorize(state, conn)
            assert len(memo) <= 8


def test_audit_matches_are_logged_for_every_connection(
    state: ProxyState, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AP(
        "shop",
        "watch-web",
        {
            "action": "AUDIT",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}],
        },
    )
    state.apply([], [], [authorization(audit)])
    memo = MemoizedAuthorizer(state)
    caplog.set_level("INFO", "ambient.ztunnel")
    for _ in range(3):
        assert memo(connection(state)).allowed
    lines = [r.getMessage() for r in caplog.records if "AUDIT policy matched" in r.getMessage()]
    assert len(lines) == 3
    assert len(memo) == 0
