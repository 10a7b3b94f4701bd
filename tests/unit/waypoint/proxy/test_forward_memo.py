"""What the forwarder keeps between requests, and that a push or a new target is never
answered from it: the backend view (service, cluster, endpoints, declared protocol) per
ProxyState version, and ForwardToTarget's decision per target."""

from __future__ import annotations

import dataclasses
import ipaddress

from ambient.frozen import FrozenMap
from ambient.hbone.pool import ConnectionPool
from ambient.state.proxy import ProxyState
from ambient.state.workload import (
    AppProtocol,
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)
from ambient.waypoint.model import Backend, RequestHead, Target
from ambient.waypoint.proxy.defaults import AllowAll, ForwardToTarget, NoAuthentication
from ambient.waypoint.proxy.forward import Forwarder, Policies
from ambient.waypoint.proxy.upstream import UpstreamClient

SVC = Service(
    "orders",
    "shop",
    "orders.shop.svc.cluster.local",
    (ipaddress.IPv4Address("10.0.0.1"),),
    (Port(80, 8080),),
)


def pod(name: str, ip: str, version: str = "v1", **kw: object) -> Workload:
    return Workload(
        uid=f"k//Pod/shop/{name}", name=name, namespace="shop",
        addresses=(ipaddress.IPv4Address(ip),), service_account="orders", node="n",
        tunnel_protocol=TunnelProtocol.HBONE,
        status=kw.get("status", WorkloadStatus.HEALTHY),  # type: ignore[arg-type]
        labels=FrozenMap({"version": version}),
        services=FrozenMap({SVC.key: (Port(80, 9090),)}),
    )  # fmt: skip


def forwarder(state: ProxyState) -> Forwarder:
    policies = Policies(NoAuthentication(), AllowAll(), ForwardToTarget())
    return Forwarder(state, policies, UpstreamClient(ConnectionPool()))


def names(fwd: Forwarder, backend: Backend) -> list[str]:
    return [e.workload.name for e in fwd.backend_view(backend).endpoints]


def test_backend_view_follows_every_push() -> None:
    state = ProxyState("n")
    state.apply([SVC, pod("a", "10.1.0.1")], [])
    fwd = forwarder(state)
    backend = Backend("shop", SVC.hostname, 80)
    assert names(fwd, backend) == ["a"]
    assert fwd.backend_view(backend).cluster == f"outbound|80||{SVC.hostname}"
    assert fwd.backend_view(backend).declared is AppProtocol.UNKNOWN
    # a turns unhealthy and b arrives: the next request must see exactly that
    state.apply([pod("a", "10.1.0.1", status=WorkloadStatus.UNHEALTHY), pod("b", "10.1.0.2")], [])
    assert names(fwd, backend) == ["b"]
    pick = fwd.pick(backend)
    assert pick is not None and pick.workload.name == "b"
    state.apply([], [pod("b", "10.1.0.2").uid])
    assert names(fwd, backend) == [] and fwd.pick(backend) is None
    # the service port now declares gRPC: the upstream version follows
    state.apply([dataclasses.replace(SVC, ports=(Port(80, 8080, AppProtocol.GRPC),))], [])
    assert fwd.backend_view(backend).declared is AppProtocol.GRPC
    assert fwd.version_to(backend, "HTTP/1.1") == "HTTP/2"


def test_backend_view_is_per_subset_and_its_labels() -> None:
    state = ProxyState("n")
    state.apply([SVC, pod("a", "10.1.0.1", "v1"), pod("b", "10.1.0.2", "v2")], [])
    fwd = forwarder(state)
    v1 = Backend("shop", SVC.hostname, 80, "canary", FrozenMap({"version": "v1"}))
    # the same subset name after a DestinationRule change (no push): other labels
    v2 = Backend("shop", SVC.hostname, 80, "canary", FrozenMap({"version": "v2"}))
    assert names(fwd, v1) == ["a"]
    assert names(fwd, v2) == ["b"]
    assert names(fwd, Backend("shop", SVC.hostname, 80)) == ["a", "b"]
    assert names(fwd, Backend("shop", SVC.hostname, 81)) == []  # no such service port


def test_forward_to_target_decides_per_target() -> None:
    router = ForwardToTarget()
    request = RequestHead("GET", "orders", "/")
    vip = ipaddress.IPv4Address("10.0.0.1")
    targets = [
        Target("shop", SVC.hostname, vip, 80),
        Target("shop", SVC.hostname, vip, 81),
        Target("shop", "other.shop.svc.cluster.local", vip, 80),
        Target("bank", SVC.hostname, vip, 80),
    ]
    for _ in range(2):  # the second time from the memo
        for target in targets:
            decision = router.route(target, request)
            assert decision.backend == Backend(target.namespace, str(target.hostname), target.port)
    workload = Target("shop", None, vip, 80)
    assert router.route(workload, request).backend is None  # never a service decision
