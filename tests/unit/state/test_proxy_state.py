"""ProxyState: atomic pushes, mesh hostnames, VIP round robin over healthy endpoints."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.state.workload import Port, Service, TunnelProtocol, Workload, WorkloadStatus

SVC = Service(
    name="orders",
    namespace="shop",
    hostname="orders.shop.svc.cluster.local",
    addresses=(ipaddress.IPv4Address("127.20.0.1"),),
    ports=(Port(80, 8080),),
)


def pod(i: int, *, healthy: bool = True, node: str = "node-1") -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/shop/orders-{i}",
        name=f"orders-{i}",
        namespace="shop",
        addresses=(ipaddress.IPv4Address(f"127.10.0.{i}"),),
        service_account="orders",
        node=node,
        tunnel_protocol=TunnelProtocol.HBONE,
        status=WorkloadStatus.HEALTHY if healthy else WorkloadStatus.UNHEALTHY,
        services=FrozenMap({SVC.key: (Port(80, 8080),)}),
    )


@pytest.fixture
def state() -> ProxyState:
    s = ProxyState("node-1")
    s.apply([SVC, pod(1), pod(2), pod(3, healthy=False, node="node-2")], [])
    return s


@pytest.mark.parametrize(
    ("name", "namespace", "found"),
    [
        ("orders", "shop", True),  # short name: same namespace only
        ("orders", "default", False),
        ("orders.shop", "default", True),
        ("orders.shop.svc", "default", True),
        ("orders.shop.svc.cluster.local", "default", True),
        ("orders.shop.svc.cluster.local.", "default", True),
        ("ORDERS.shop", "default", True),
        ("orders.other", "shop", False),
        ("example.com", "shop", False),
    ],
)
def test_hostname_resolution(state: ProxyState, name: str, namespace: str, found: bool) -> None:
    assert (state.resolve_host(name, namespace) is SVC) is found


def test_round_robin_skips_unhealthy_and_maps_ports(state: ProxyState) -> None:
    picks = [state.resolve(SVC.addresses[0], 80) for _ in range(6)]
    assert all(p is not None and p.port == 8080 and p.service is SVC for p in picks)
    names = [p.workload.name for p in picks if p is not None and p.workload is not None]
    assert names == ["orders-1", "orders-2"] * 3


def test_unknown_service_port_and_no_endpoints(state: ProxyState) -> None:
    assert state.resolve(SVC.addresses[0], 9999) is None
    state.apply(
        [
            replace(pod(1), status=WorkloadStatus.UNHEALTHY),
            replace(pod(2), status=WorkloadStatus.UNHEALTHY),
        ],
        [],
    )
    assert state.resolve(SVC.addresses[0], 80) is None


def test_plain_ip_is_a_workload_or_passthrough(state: ProxyState) -> None:
    known = state.resolve(ipaddress.IPv4Address("127.10.0.1"), 8080)
    assert known is not None and known.workload is not None and known.hbone
    unknown = state.resolve(ipaddress.IPv4Address("127.99.0.1"), 80)
    assert unknown is not None and unknown.workload is None and not unknown.hbone


def test_removal_and_local_workloads(state: ProxyState) -> None:
    assert {w.name for w in state.local_workloads()} == {"orders-1", "orders-2"}
    seen: list[int] = []
    state.on_change(lambda s: seen.append(len(s.workloads)))
    state.apply([], [pod(2).uid, SVC.key])
    assert seen == [2]
    assert state.resolve_host("orders", "shop") is None
    assert state.endpoints(SVC) == []


def test_the_endpoints_a_pick_chooses_from_follow_every_push(state: ProxyState) -> None:
    """The serving endpoints are kept between pushes: each push must be seen by the next pick."""
    assert {state.pick_endpoint(SVC, 80).workload.name for _ in range(4)} == {  # type: ignore[union-attr]
        "orders-1",
        "orders-2",
    }
    state.apply([replace(pod(2), status=WorkloadStatus.UNHEALTHY)], [])
    picks = [state.pick_endpoint(SVC, 80) for _ in range(4)]
    assert {p.workload.name for p in picks if p and p.workload} == {"orders-1"}
    state.apply([replace(pod(1), services=FrozenMap({SVC.key: (Port(80, 9090),)}))], [])
    picked = state.pick_endpoint(SVC, 80)
    assert (
        picked is not None
        and picked.port == 9090
        and picked.workload == state.workloads[pod(1).uid]
    )
    state.apply([], [pod(1).uid])
    assert state.pick_endpoint(SVC, 80) is None


def test_an_excluded_endpoint_is_left_out_of_that_pick_only(state: ProxyState) -> None:
    for _ in range(3):
        picked = state.pick_endpoint(SVC, 80, exclude=[pod(1).uid])
        assert picked is not None and picked.workload is not None
        assert picked.workload.name == "orders-2"
    assert {state.pick_endpoint(SVC, 80).workload.name for _ in range(4)} == {  # type: ignore[union-attr]
        "orders-1",
        "orders-2",
    }
    assert state.pick_endpoint(SVC, 80, exclude=[pod(1).uid, pod(2).uid]) is None
