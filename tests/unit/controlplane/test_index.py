"""build_snapshot: enrollment, workload fields, services and ports, entries, conflicts."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ambient.config import load_text
from ambient.controlplane import AddressAllocator, AddressConflict, MeshSnapshot, build_snapshot
from ambient.state.workload import AppProtocol, Port, TunnelProtocol, Workload
from tests.unit.controlplane.manifests import (
    deployment,
    namespace,
    pod,
    service,
    service_account,
    snapshot,
    workload_entry,
)

ip = ipaddress.ip_address
HBONE, NONE = TunnelProtocol.HBONE, TunnelProtocol.NONE
SHOP = (Path(__file__).parents[1] / "config" / "shop.yaml").read_text()


def only(snap: MeshSnapshot, kind: str = "Pod") -> Workload:
    (found,) = [w for w in snap.workloads.values() if f"//{kind}/" in w.uid]
    return found


# -- enrollment -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns_mode", "pod_mode", "expected"),
    [
        (None, None, NONE),
        ("ambient", None, HBONE),
        ("ambient", "none", NONE),  # the pod opts out
        (None, "ambient", HBONE),  # the pod opts in alone
        ("none", "ambient", HBONE),
        ("ambient", "sidecar", NONE),  # unknown values do not enroll (the loader warns)
        ("sidecar", None, NONE),
    ],
)
def test_enrollment_pod(
    ns_mode: str | None, pod_mode: str | None, expected: TunnelProtocol
) -> None:
    labels = "{}" if pod_mode is None else f"{{istio.io/dataplane-mode: {pod_mode}}}"
    snap = snapshot(namespace("shop", ns_mode), pod("p", "shop", labels=labels))
    assert only(snap).tunnel_protocol is expected


@pytest.mark.parametrize(
    ("ns_mode", "template_mode", "expected"),
    [("ambient", None, HBONE), ("ambient", "none", NONE), (None, "ambient", HBONE)],
)
def test_enrollment_template_label(
    ns_mode: str | None, template_mode: str | None, expected: TunnelProtocol
) -> None:
    labels = (
        "{app: x}"
        if template_mode is None
        else f"{{app: x, istio.io/dataplane-mode: {template_mode}}}"
    )
    snap = snapshot(namespace("shop", ns_mode), deployment("d", "shop", labels=labels))
    assert only(snap).tunnel_protocol is expected


@pytest.mark.parametrize(
    ("ns_mode", "we_labels", "expected"),
    [
        ("ambient", "{}", HBONE),
        ("ambient", "{istio.io/dataplane-mode: none}", NONE),
        (None, "{istio.io/dataplane-mode: ambient}", HBONE),
        (None, "{}", NONE),
    ],
)
def test_enrollment_workload_entry(
    ns_mode: str | None, we_labels: str, expected: TunnelProtocol
) -> None:
    snap = snapshot(namespace("vms", ns_mode), workload_entry("vm", "10.0.0.1", "vms", we_labels))
    assert only(snap, "WorkloadEntry").tunnel_protocol is expected


# -- workload fields --------------------------------------------------------------------------


def test_deployment_pod_fields() -> None:
    snap = snapshot(
        namespace("shop", "ambient"),
        service_account("web", "shop"),
        deployment("web", "shop", labels="{app: web, version: v1}", sa="web"),
    )
    w = only(snap)
    assert w.uid == f"Kubernetes//Pod/shop/{w.name}" and w.name.startswith("web-")
    assert (w.workload_name, w.workload_type) == ("web", "deployment")
    assert (w.canonical_name, w.canonical_revision) == ("web", "v1")
    assert w.service_account == "web" and w.node == "node-1" and w.local
    assert w.addresses == (ip("127.10.0.1"),)
    assert str(w.identity) == "spiffe://cluster.local/ns/shop/sa/web"
    assert w.waypoint is None and w.labels["pod-template-hash"]
    assert dict(snap.nodes) == {"node-1": ip("127.1.0.1")}


@pytest.mark.parametrize(
    ("labels", "name", "revision"),
    [
        ("{}", "p", "latest"),
        ("{app: a, version: v2}", "a", "v2"),
        (
            "{app: a, app.kubernetes.io/name: k, version: v, app.kubernetes.io/version: kv}",
            "k",
            "kv",
        ),
        (
            "{app: a, service.istio.io/canonical-name: c, service.istio.io/canonical-revision: cr,"
            " app.kubernetes.io/version: kv}",
            "c",
            "cr",
        ),
    ],
)
def test_canonical_name_and_revision(labels: str, name: str, revision: str) -> None:
    w = only(snapshot(pod("p", labels=labels)))
    assert (w.canonical_name, w.canonical_revision) == (name, revision)
    assert (w.workload_name, w.workload_type) == ("p", "pod")


def test_explicit_pod_ip_and_allocated_ones_avoid_it() -> None:
    snap = snapshot(pod("a", ip="127.10.0.1"), pod("b"))
    assert snap.workloads["Kubernetes//Pod/default/a"].addresses == (ip("127.10.0.1"),)
    assert snap.workloads["Kubernetes//Pod/default/b"].addresses == (ip("127.10.0.2"),)


def test_conflicting_explicit_addresses_name_both() -> None:
    docs = (pod("a", ip="10.1.1.1"), workload_entry("vm", "10.1.1.1"))
    with pytest.raises(AddressConflict, match="Pod default/a and WorkloadEntry default/vm"):
        snapshot(*docs)


def test_workload_entry_fields() -> None:
    snap = snapshot(
        workload_entry("vm", "192.168.1.7", labels="{app: legacy, ambient.io/node: node-7}")
    )
    w = only(snap, "WorkloadEntry")
    assert w.uid == "Kubernetes//WorkloadEntry/default/vm"
    assert (w.workload_type, w.workload_name, w.canonical_name) == ("workloadentry", "vm", "legacy")
    assert w.node == "node-7" and not w.local and w.addresses == (ip("192.168.1.7"),)
    assert snap.nodes == {}  # only pods' nodes get node addresses


def test_workload_entry_with_hostname_warns() -> None:
    snap = snapshot(workload_entry("vm", "vm.example.com"))
    assert only(snap, "WorkloadEntry").addresses == ()
    assert any("'vm.example.com' is not an IP address" in w for w in snap.warnings)


# -- services ---------------------------------------------------------------------------------

NAMED_PORTS = "[{name: http, containerPort: 8080}]"


def test_named_target_port_resolves_per_pod() -> None:
    snap = snapshot(
        pod("has", labels="{app: x}", ports=NAMED_PORTS),
        pod("other", labels="{app: x}", ports="[{name: http, containerPort: 9000}]"),
        pod("lacks", labels="{app: x}"),
        service(
            "s",
            ports="[{name: web, port: 80, targetPort: http},"
            " {name: raw, port: 81, targetPort: 7000}]",
        ),
    )
    key = "default/s.default.svc.cluster.local"
    assert snap.services[key].ports == (Port(80, 0), Port(81, 7000))
    services = {w.name: w.services[key] for w in snap.workloads.values()}
    assert services == {
        "has": (Port(80, 8080), Port(81, 7000)),
        "other": (Port(80, 9000), Port(81, 7000)),
        "lacks": (Port(81, 7000),),
    }


def test_pod_without_any_resolvable_port_is_no_endpoint() -> None:
    snap = snapshot(
        pod("lacks", labels="{app: x}"), service("s", ports="[{port: 80, targetPort: http}]")
    )
    assert snap.endpoints("default/s.default.svc.cluster.local") == ()


def test_selector_matches_pods_and_workload_entries_in_namespace() -> None:
    snap = snapshot(
        namespace("other"),
        pod("match", labels="{app: x, v: '1'}"),
        pod("nomatch", labels="{app: y}"),
        pod("elsewhere", "other", labels="{app: x}"),
        workload_entry("vm", "10.0.0.9", labels="{app: x}", ports="{http: 9080}"),
        service("s", ports="[{name: http, port: 80, targetPort: 8080}]"),
        service("all", selector="{}"),
    )
    key = "default/s.default.svc.cluster.local"
    assert [w.name for w in snap.endpoints(key)] == ["match", "vm"]
    vm = snap.workloads["Kubernetes//WorkloadEntry/default/vm"]
    assert vm.services[key] == (Port(80, 9080),)  # WorkloadEntry ports by service port name
    assert snap.endpoints("default/all.default.svc.cluster.local") == ()


def test_workload_entry_named_target_port() -> None:
    snap = snapshot(
        workload_entry("vm", "10.0.0.9", labels="{app: x}", ports="{web: 9080}"),
        service(
            "s",
            ports="[{name: a, port: 80, targetPort: web}, {name: b, port: 81, targetPort: nope}]",
        ),
    )
    vm = only(snap, "WorkloadEntry")
    assert dict(vm.services) == {"default/s.default.svc.cluster.local": (Port(80, 9080),)}


def test_service_vips_headless_and_udp() -> None:
    snap = snapshot(
        pod("p", labels="{app: x}"),
        service("fixed", cluster_ip="10.96.0.10"),
        service("auto"),
        service("headless", cluster_ip="None", ports="[]"),
        service("mixed", ports="[{name: dns, port: 53, protocol: UDP}, {name: tcp, port: 54}]"),
    )
    vips = {s.name: s.addresses for s in snap.services.values()}
    assert vips == {
        "fixed": (ip("10.96.0.10"),),
        "auto": (ip("127.20.0.1"),),
        "headless": (),
        "mixed": (ip("127.20.0.2"),),
    }
    mixed = snap.services["default/mixed.default.svc.cluster.local"]
    assert mixed.ports == (Port(54, 54, AppProtocol.TCP),)  # port name "tcp"
    p = only(snap)
    assert p.services["default/headless.default.svc.cluster.local"] == ()
    assert (
        snap.service_by_vip(ip("10.96.0.10"))
        is snap.services["default/fixed.default.svc.cluster.local"]
    )


SERVICE_ENTRY = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com, api2.example.com]
  addresses: [240.0.0.1, 10.0.0.0/8, 127.20.0.1]
  subjectAltNames: [spiffe://example.com/ns/x/sa/y]
  ports:
  - {number: 443, name: https, protocol: HTTPS, targetPort: 8443}
  - {number: 53, name: dns, protocol: UDP}
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 1.2.3.4, labels: {app: ext}, ports: {https: 9443}}
  - {address: 1.2.3.5, labels: {istio.io/dataplane-mode: none}}
"""


def test_service_entry_services_and_endpoints() -> None:
    snap = snapshot(
        namespace("default", "ambient"), service("taken", cluster_ip="127.20.0.1"), SERVICE_ENTRY
    )
    api = snap.services["default/api.example.com"]
    assert api.name == "ext" and api.addresses == (ip("240.0.0.1"),)
    assert api.ports == (Port(443, 8443, AppProtocol.TLS),)  # protocol: HTTPS
    assert api.subject_alt_names == ("spiffe://example.com/ns/x/sa/y",)
    assert "default/api2.example.com" in snap.services
    assert any("10.0.0.0/8 cannot be a service VIP" in w for w in snap.warnings)
    assert any("127.20.0.1 is already the VIP of default/taken" in w for w in snap.warnings)
    first = snap.workloads["Kubernetes//ServiceEntry/default/ext/1.2.3.4"]
    second = snap.workloads["Kubernetes//ServiceEntry/default/ext/1.2.3.5"]
    assert first.services["default/api.example.com"] == (Port(443, 9443),)
    assert second.services["default/api2.example.com"] == (Port(443, 8443),)
    assert (first.tunnel_protocol, second.tunnel_protocol) == (HBONE, NONE)  # MESH_INTERNAL
    assert (
        not first.local and first.workload_type == "workloadentry" and first.canonical_name == "ext"
    )
    assert [w.uid for w in snap.endpoints(api)] == [first.uid, second.uid]


def test_external_service_entry_endpoints_ignore_namespace_enrollment() -> None:
    external = SERVICE_ENTRY.replace("MESH_INTERNAL", "MESH_EXTERNAL")
    snap = snapshot(namespace("default", "ambient"), external)
    assert snap.workloads["Kubernetes//ServiceEntry/default/ext/1.2.3.4"].tunnel_protocol is NONE


def test_service_entry_workload_selector() -> None:
    selector_entry = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mesh, namespace: default}
spec:
  hosts: [db.internal]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  workloadSelector: {labels: {app: db}}
  location: MESH_INTERNAL
"""
    snap = snapshot(
        pod("db", labels="{app: db}"),
        pod("web", labels="{app: web}"),
        workload_entry("vm", "10.0.0.3", labels="{app: db}", ports="{pg: 6432}"),
        selector_entry,
    )
    assert {w.name: dict(w.services) for w in snap.endpoints("default/db.internal")} == {
        "db": {"default/db.internal": (Port(5432, 5432),)},
        "vm": {"default/db.internal": (Port(5432, 6432),)},
    }


def test_shop_example() -> None:
    snap = build_snapshot(load_text(SHOP, "shop.yaml"), AddressAllocator())
    pods = [w for w in snap.workloads.values() if w.local]
    # 7 pods and the waypoint Gateway's pod, which speaks HBONE itself
    assert len(pods) == 8 and all(w.tunnel_protocol is HBONE for w in pods)
    orders = snap.services["shop/orders.shop.svc.cluster.local"]
    assert orders.addresses == (ip("127.10.0.20"),)
    assert {w.workload_name for w in snap.endpoints(orders)} == {
        "orders-v1",
        "orders-v2",
        "legacy-vm",
    }
    assert {w.node for w in snap.endpoints(orders) if w.local} == {"node-1", "node-2"}
    assert all(ip("127.10.0.20") not in w.addresses for w in snap.workloads.values())
    assert snap.warnings == ()
