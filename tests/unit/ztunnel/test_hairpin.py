"""Which waypoint plaintext for a waypoint-bound pod is hair-pinned through (``waypoint_target``)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from ambient.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.state.workload import GatewayAddress, Port, Service, TunnelProtocol, Workload
from ambient.ztunnel.plaintext import waypoint_target

WAYPOINT = GatewayAddress("shop/waypoint.shop.svc.cluster.local")
POD_IP = ipaddress.IPv4Address("10.244.0.7")
VIP = ipaddress.IPv4Address("10.96.0.9")


def service(name: str, *, waypoint: GatewayAddress | None, port: Port) -> Service:
    return Service(
        name=name,
        namespace="shop",
        hostname=f"{name}.shop.svc.cluster.local",
        addresses=(VIP,) if name == "orders" else (ipaddress.IPv4Address("10.96.0.10"),),
        ports=(port,),
        waypoint=waypoint,
    )


def orders(*services: Service, waypoint: GatewayAddress | None = None) -> Workload:
    return Workload(
        uid="Kubernetes//Pod/shop/orders-1",
        name="orders-1",
        namespace="shop",
        addresses=(POD_IP,),
        service_account="orders",
        node="node-2",
        tunnel_protocol=TunnelProtocol.HBONE,
        services=FrozenMap({s.key: s.ports for s in services}),
        waypoint=waypoint,
    )


def target(*services: Service, waypoint: GatewayAddress | None = None, port: int = 8080) -> object:
    pod = orders(*services, waypoint=waypoint)
    state = ProxyState("node-2")
    state.apply([*services, pod], [])
    return waypoint_target(state, pod, POD_IP, port)


def test_the_pods_own_waypoint_keeps_the_address() -> None:
    assert target(waypoint=WAYPOINT) == (POD_IP, 8080)


def test_a_service_waypoint_gets_the_vip_and_the_service_port_mapped_to_the_pod_port() -> None:
    svc = service("orders", waypoint=WAYPOINT, port=Port(80, 8080))
    assert target(svc) == (VIP, 80)


@pytest.mark.parametrize(
    ("services", "port"),
    [
        ((), 8080),  # no service, no waypoint
        ((service("orders", waypoint=None, port=Port(80, 8080)),), 8080),  # service without one
        ((service("orders", waypoint=WAYPOINT, port=Port(80, 8080)),), 9090),  # other pod port
    ],
)
def test_no_waypoint_applies(services: tuple[Service, ...], port: int) -> None:
    assert target(*services, port=port) is None


def test_a_service_without_a_vip_is_skipped_for_one_that_has_one() -> None:
    headless = replace(
        service("aaa-headless", waypoint=WAYPOINT, port=Port(8080, 8080)), addresses=()
    )
    svc = service("orders", waypoint=WAYPOINT, port=Port(80, 8080))
    assert target(headless, svc) == (VIP, 80)
