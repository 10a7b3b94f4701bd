"""The one tracker of open connections: judged again after a push, closed when now denied."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.ztunnel.authorization import InboundConnection, Verdict
from ambient.ztunnel.connections import ConnectionTracker
from tests.unit.state.test_proxy_state import pod

WEB_IP = ipaddress.ip_address("127.10.0.9")


def admitted(i: int, identity: str | None) -> InboundConnection:
    destination = pod(i)
    return InboundConnection(identity, WEB_IP, destination, destination.addresses[0], 8080)


class Policy:
    """Denies connections to pods whose labels say ``locked: "yes"`` (the current labels)."""

    def __call__(self, conn: InboundConnection) -> Verdict:
        locked = conn.destination.labels.get("locked") == "yes"
        return Verdict(not locked, "locked" if locked else "")


def test_a_push_that_denies_closes_only_those_connections(caplog: pytest.LogCaptureFixture) -> None:
    state = ProxyState("node-1")
    state.apply([pod(1), pod(2)], [])
    tracker = ConnectionTracker(state, lambda: Policy())
    closed: list[str] = []
    with (
        tracker.tracking("a", admitted(1, "spiffe://td/ns/shop/sa/web"), lambda: closed.append("a"), "127.10.0.9:4000"),
        tracker.tracking("b", admitted(2, None), lambda: closed.append("b"), "127.10.0.9"),
    ):  # fmt: skip
        assert tracker.close_denied() == 0 and len(tracker) == 2
        state.apply([replace(pod(1), labels=FrozenMap({"locked": "yes"}))], [])
        caplog.set_level("INFO", "ambient.ztunnel")
        assert tracker.close_denied() == 1
        assert closed == ["a"] and len(tracker) == 1
        assert tracker.close_denied() == 0  # closed once, logged once
    assert len(tracker) == 0
    lines = [r.getMessage() for r in caplog.records if "closing established" in r.getMessage()]
    assert lines == [
        "RBAC rejected conn=127.10.0.9:4000(spiffe://td/ns/shop/sa/web)->127.10.0.1:8080: "
        "closing established connection: locked"
    ]


def test_a_destination_that_left_the_state_is_not_judged() -> None:
    state = ProxyState("node-1")
    state.apply([pod(1)], [])
    closed: list[str] = []
    tracker = ConnectionTracker(state, lambda: lambda conn: Verdict(False, "deny all"))
    with tracker.tracking("a", admitted(1, None), lambda: closed.append("a"), "127.10.0.9"):
        state.apply([], [pod(1).uid])
        assert tracker.close_denied() == 0 and closed == []
