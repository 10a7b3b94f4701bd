"""Outbound routes are kept per (source, upstream) objects: a pushed workload, or another
endpoint, gets a route of its own; the HBONE connection is bound as before."""

from __future__ import annotations

import dataclasses
import ipaddress

from ambient.config.frozen import FrozenMap
from ambient.state.proxy import ProxyState
from ambient.state.workload import Port, Service, TunnelProtocol, Workload
from ambient.ztunnel.routes import Routes

VIP = ipaddress.IPv4Address("10.96.0.10")
SERVICE = Service(
    name="orders", namespace="shop", hostname="orders.shop.svc.cluster.local",
    addresses=(VIP,), ports=(Port(80, 8080),),
)  # fmt: skip


def pod(name: str, ip: str, sa: str, protocol: TunnelProtocol = TunnelProtocol.HBONE) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/shop/{name}", name=name, namespace="shop",
        addresses=(ipaddress.ip_address(ip),), service_account=sa, node="node-1",
        tunnel_protocol=protocol,
        services=FrozenMap({SERVICE.key: SERVICE.ports}) if name.startswith("orders") else FrozenMap(),
    )  # fmt: skip


def test_a_route_is_kept_for_the_very_objects_only() -> None:
    state = ProxyState("node-1")
    web = pod("web", "127.10.0.1", "web")
    state.apply([SERVICE, web, pod("orders-0", "10.0.0.1", "orders")], [])
    routes = Routes(bind=False)
    upstream = state.resolve(VIP, 80, web)
    assert upstream is not None and state.resolve(VIP, 80, web) is upstream  # one endpoint
    route = routes.route(web, upstream)
    assert routes.route(web, upstream) is route
    assert (
        route.hbone and route.dst_addr == "10.0.0.1:15008" and route.hbone_addr == "10.0.0.1:8080"
    )
    assert route.source_identity == "spiffe://cluster.local/ns/shop/sa/web"
    assert route.destination_identity == "spiffe://cluster.local/ns/shop/sa/orders"
    assert [str(i) for i in route.expected] == [route.destination_identity]
    assert route.forwarded_host == "orders.shop.svc.cluster.local"
    assert route.bind_ip == "127.10.0.1"  # a loopback pod address is always bound
    # A push makes new objects: new routes, with what the new objects say.
    state.apply([pod("orders-0", "10.0.0.1", "orders-v2")], [])
    again = state.resolve(VIP, 80, web)
    assert again is not None and again is not upstream
    assert routes.route(web, again).destination_identity.endswith("/sa/orders-v2")  # type: ignore[union-attr]
    moved = dataclasses.replace(web, tunnel_protocol=TunnelProtocol.NONE)
    plain = routes.route(moved, again)
    assert not plain.hbone and plain.dst_addr == "10.0.0.1:8080" and plain.source_identity is None


def test_binding_follows_the_mode() -> None:
    state = ProxyState("node-1")
    web = pod("web", "10.244.0.5", "web")
    state.apply([SERVICE, web, pod("orders-0", "10.0.0.1", "orders")], [])
    upstream = state.resolve(VIP, 80, web)
    assert upstream is not None
    assert Routes(bind=False).route(web, upstream).bind_ip is None  # local mode, routable
    assert Routes(bind=True).route(web, upstream).bind_ip == "10.244.0.5"  # in-pod


def test_a_pod_address_reuses_its_route() -> None:
    """A connection to a pod's own address resolves to a new, equal ``Upstream`` each time:
    it must find the route kept for the first, not add one per connection."""
    state = ProxyState("node-1")
    web, orders = pod("web", "127.10.0.1", "web"), pod("orders-0", "10.0.0.1", "orders")
    state.apply([SERVICE, web, orders], [])
    routes = Routes(bind=False)
    first, second = (
        state.resolve(orders.addresses[0], 8080, web),
        state.resolve(orders.addresses[0], 8080, web),
    )
    assert first is not None and second is not None and first is not second and first == second
    route = routes.route(web, first)
    assert routes.route(web, second) is route and len(routes) == 1
    other_port = state.resolve(orders.addresses[0], 9090, web)
    assert other_port is not None and routes.route(web, other_port) is not route
    assert routes.route(web, other_port).hbone_addr == "10.0.0.1:9090"
    state.apply([pod("orders-0", "10.0.0.1", "orders-v2")], [])  # a push: a new workload object
    pushed = state.resolve(orders.addresses[0], 8080, web)
    assert pushed is not None and pushed.workload is not orders
    assert routes.route(web, pushed).destination_identity.endswith("/sa/orders-v2")  # type: ignore[union-attr]
