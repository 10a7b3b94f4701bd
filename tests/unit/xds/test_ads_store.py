"""Policies over xDS decide as in-process: the server's encoding, the client's decoding and
``ByNamePolicyStore``, without a network.

The property test runs random policies, PeerAuthentications and a destination workload
through the server's per-stream view (selector policies listed by name, PeerAuthentication
as synthetic DENYs) and the client's decode-and-apply path, and checks every ``decide``
against the in-process ``PolicyStore``: the same ``Decision``, reason included.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.authz.conn import Connection
from ambient.authz.conn import Workload as Target
from ambient.authz.evaluate import decide
from ambient.authz.model import Action, Authorization, Group, Match, Rules, Scope
from ambient.authz.peerauth import EffectiveMtls, Mode, PeerAuthentication
from ambient.authz.store import PolicyStore
from ambient.config.frozen import FrozenMap
from ambient.controlplane.snapshot import Delta
from ambient.state.proxy import ProxyState
from ambient.state.workload import TunnelProtocol, Workload
from ambient.xds.attached import ByNamePolicyStore, mtls_of_synthetic
from ambient.xds.client import XdsClient
from ambient.xds.codec import ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL
from ambient.xds.policies import (
    BY_NAME_SELECTOR,
    converted_peer_authentication,
    static_strict_authorization,
)
from ambient.xds.proto import discovery_pb2
from ambient.xds.published import MeshView
from tests.unit.authz.test_differential import (
    authorizations,
    connections,
    peer_authentications,
    workloads,
)

ROOT = "istio-system"


def api_workload(namespace: str, labels: dict[str, str], name: str = "w") -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/{namespace}/{name}",
        name=name,
        namespace=namespace,
        addresses=(ipaddress.IPv4Address("10.0.0.2"),),
        service_account="default",
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
        labels=FrozenMap(labels),
    )


def over_xds(delta: Delta, state: ProxyState | None = None) -> ProxyState:
    """``delta`` through the server's view and the client's decode-and-apply path."""
    view = MeshView("node-1", ROOT)
    view.apply(delta)
    state = state or ProxyState("node-1")
    client = XdsClient("127.0.0.1:1", "node-1", state, credentials=None)
    for type_url in (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL):
        response = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, resources=list(view.resources[type_url].values()), nonce="1"
        )
        reply = client._handle(response)
        assert not reply.HasField("error_detail"), reply.error_detail.message
    return state


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 6).flatmap(lambda n: st.tuples(*(authorizations(i) for i in range(n)))),
    st.integers(0, 4).flatmap(lambda n: st.tuples(*(peer_authentications(i) for i in range(n)))),
    workloads,
    st.lists(connections, min_size=1, max_size=6),
)
def test_xds_fed_store_decides_like_in_process(
    policies: tuple[Authorization, ...],
    peers: tuple[PeerAuthentication, ...],
    target: Target,
    conns: list[Connection],
) -> None:
    local = PolicyStore(ROOT)
    for policy in policies:
        local.put_authorization(policy)
    for peer in peers:
        local.put_peer_authentication(peer)
    workload = api_workload(target.namespace, dict(target.labels))
    state = over_xds(Delta((workload,), (), (*policies, *peers)))
    assert isinstance(state.policies, ByNamePolicyStore)
    for conn in conns:
        assert decide(state.policies, target, conn) == decide(local, target, conn), conn


def test_policies_attach_by_name_only() -> None:
    store_of = ProxyState("node-1")
    listed = Authorization(
        "listed",
        "shop",
        Scope.WORKLOAD_SELECTOR,
        Action.DENY,
        (Group(),),
        selector=BY_NAME_SELECTOR,
    )
    store = ByNamePolicyStore(lambda: store_of.workloads, ROOT)
    store.put_authorization(listed)
    orders = Target("shop", {"app": "orders"})
    conn = Connection.of(None, "10.0.0.1", "10.0.0.2", 80)
    assert decide(store, orders, conn).allowed  # not listed by any workload yet
    w = api_workload("shop", {"app": "orders"})
    store_of.apply([w], [])
    assert decide(store, orders, conn).allowed  # listed by none: still not attached
    store_of.apply([replace(w, authorization_policies=("shop/listed",))], [])
    verdict = decide(store, orders, conn)
    assert (verdict.allowed, verdict.policy) == (False, "shop/listed")
    assert decide(store, Target("shop", {"app": "web"}), conn).allowed
    store.remove_authorization("shop", "listed")
    assert decide(store, orders, conn).allowed


def pa(mode: Mode, ports: dict[int, Mode]) -> PeerAuthentication:
    return PeerAuthentication(
        "wl", "shop", mode, (("app", "orders"),), tuple(sorted(ports.items()))
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            static_strict_authorization(ROOT),
            EffectiveMtls(True, (), f"{ROOT}/istio_converted_static_strict"),
        ),
        (
            converted_peer_authentication(
                pa(Mode.STRICT, {80: Mode.PERMISSIVE, 90: Mode.PERMISSIVE}),
                EffectiveMtls(True, ((80, False), (90, False)), "x"),
            ),
            EffectiveMtls(
                True, ((80, False), (90, False)), "shop/converted_peer_authentication_wl"
            ),
        ),
        (
            converted_peer_authentication(
                pa(Mode.PERMISSIVE, {80: Mode.STRICT}), EffectiveMtls(False, ((80, True),), "x")
            ),
            EffectiveMtls(False, ((80, True),), "shop/converted_peer_authentication_wl"),
        ),
    ],
    ids=["static", "strict-with-exceptions", "permissive-with-strict-ports"],
)
def test_synthetic_policies_read_back(
    policy: Authorization | None, expected: EffectiveMtls
) -> None:
    assert policy is not None
    assert mtls_of_synthetic(policy) == expected


@pytest.mark.parametrize(
    "groups",
    [
        (),
        (
            Group(
                (
                    Rules(
                        (
                            Match(
                                principals=(),
                            ),
                            Match(not_destination_ports=(80,)),
                        )
                    ),
                )
            ),
        ),
        (Group((Rules((Match(destination_ports=(80,)),)),)),),
    ],
    ids=["no-groups", "other-rule", "port-without-identity"],
)
def test_other_shapes_stay_plain_denies(groups: tuple[Group, ...]) -> None:
    policy = Authorization(
        "istio_converted_static_strict",
        ROOT,
        Scope.WORKLOAD_SELECTOR,
        Action.DENY,
        groups,
        selector=BY_NAME_SELECTOR,
    )
    assert mtls_of_synthetic(policy) is None
