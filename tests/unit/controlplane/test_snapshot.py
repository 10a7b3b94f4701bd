"""MeshSnapshot lookups (hostnames, addresses, nodes) and diff ordering and minimality."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from ambient.config import FrozenMap
from ambient.controlplane import EMPTY, AddressAllocator, MeshSnapshot, build_snapshot, diff
from ambient.state.workload import Service, Workload
from tests.unit.controlplane.manifests import (
    deployment,
    load,
    namespace,
    pod,
    service,
    workload_entry,
)

ip = ipaddress.ip_address

HOSTS = (
    namespace("shop"),
    namespace("other"),
    service("orders", "shop"),
    service("orders", "other"),
    """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: other}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
""",
)


@pytest.mark.parametrize(
    ("name", "from_ns", "expected"),
    [
        ("orders", "shop", "shop/orders.shop.svc.cluster.local"),
        ("orders", "other", "other/orders.other.svc.cluster.local"),
        ("orders", "default", None),  # short names only within the namespace
        ("orders.shop", "default", "shop/orders.shop.svc.cluster.local"),
        ("orders.shop.svc", "other", "shop/orders.shop.svc.cluster.local"),
        ("orders.shop.svc.cluster.local", "other", "shop/orders.shop.svc.cluster.local"),
        ("Orders.Shop.svc.cluster.local.", "x", "shop/orders.shop.svc.cluster.local"),
        ("orders.nowhere", "shop", None),
        ("orders.shop.svc.cluster", "shop", None),
        ("api.example.com", "shop", "other/api.example.com"),
        ("api", "other", None),
    ],
)
def test_service_by_host(name: str, from_ns: str, expected: str | None) -> None:
    snap = build_snapshot(load(*HOSTS), AddressAllocator())
    found = snap.service_by_host(name, from_ns)
    assert (found.key if found else None) == expected


def test_lookups_by_address_and_node() -> None:
    snap = build_snapshot(
        load(
            pod("a", ip="10.0.0.1", node="node-2"),
            pod("b"),
            workload_entry("vm", "10.0.0.2"),
            service("s", cluster_ip="10.96.0.1"),
        ),
        AddressAllocator(),
    )
    a = snap.workload_by_ip(ip("10.0.0.1"))
    assert a is not None and a.name == "a"
    vm = snap.workload_by_ip(ip("10.0.0.2"))
    assert vm is not None and vm.name == "vm"
    assert snap.workload_by_ip(ip("10.0.0.3")) is None
    assert (
        snap.service_by_vip(ip("10.96.0.1")) is snap.services["default/s.default.svc.cluster.local"]
    )
    assert [w.name for w in snap.workloads_on("node-2")] == ["a"]
    assert [w.name for w in snap.workloads_on("")] == ["vm"]
    assert snap.workloads_on("node-9") == ()


def test_snapshot_checks_keys() -> None:
    svc = Service("s", "ns", "s.ns.svc.cluster.local", (), ())
    with pytest.raises(ValueError, match="wrong key"):
        MeshSnapshot(services={"ns/other": svc})


# -- diff -------------------------------------------------------------------------------------


def build(*docs: str, allocator: AddressAllocator) -> MeshSnapshot:
    return build_snapshot(load(*docs), allocator)


def test_full_diff_orders_services_first() -> None:
    snap = build(pod("p", labels="{app: x}"), service("s"), allocator=AddressAllocator())
    delta = diff(EMPTY, snap)
    assert [type(a).__name__ for a in delta.upserted] == ["Service", "Workload"]
    assert delta.removed == ()
    assert not diff(snap, snap)


def test_one_label_change_yields_exactly_that_workload() -> None:
    allocator = AddressAllocator()
    docs = [
        namespace("shop", "ambient"),
        deployment("web", "shop", replicas=3),
        service("s", "shop"),
    ]
    old = build(*docs, pod("p", "shop"), allocator=allocator)
    new = build(
        *docs, pod("p", "shop", labels="{istio.io/dataplane-mode: none}"), allocator=allocator
    )
    delta = diff(old, new)
    assert [a.uid for a in delta.upserted if isinstance(a, Workload)] == ["Kubernetes//Pod/shop/p"]
    assert len(delta.upserted) == 1 and delta.removed == ()


def test_removals_workloads_before_services() -> None:
    allocator = AddressAllocator()
    old = build(pod("p", labels="{app: x}"), service("s"), allocator=allocator)
    new = build(allocator=allocator)
    delta = diff(old, new)
    assert delta.removed == ("Kubernetes//Pod/default/p", "default/s.default.svc.cluster.local")
    assert delta.upserted == ()


def test_service_change_only_touches_service_and_its_endpoints() -> None:
    allocator = AddressAllocator()
    old = build(
        pod("p", labels="{app: x}"), pod("q", labels="{app: y}"), service("s"), allocator=allocator
    )
    new = build(
        pod("p", labels="{app: x}"),
        pod("q", labels="{app: y}"),
        service("s", ports="[{port: 81}]"),
        allocator=allocator,
    )
    delta = diff(old, new)
    keys = [a.key if isinstance(a, Service) else a.uid for a in delta.upserted]
    assert keys == ["default/s.default.svc.cluster.local", "Kubernetes//Pod/default/p"]


def test_diff_compares_values_not_identity() -> None:
    snap = build(pod("p"), allocator=AddressAllocator())
    copy = MeshSnapshot(
        {k: dataclasses.replace(w) for k, w in snap.workloads.items()},
        dict(snap.services),
        nodes=FrozenMap(snap.nodes),
    )
    assert not diff(snap, copy)
