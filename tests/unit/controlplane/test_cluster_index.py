"""``ClusterIndex``: the index of a cluster's objects, fed one change at a time.

The property test drives random single-object changes through
``ControlPlane.apply_changes`` (pods getting and losing IPs, readiness, nodes,
terminal phases, host networking; Services, namespaces, policies, a waypoint
Gateway) and compares each snapshot with a fresh ``ClusterIndex``'s full build of
the same objects, and each ``Delta`` with the full ``diff``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.config import ConfigSet, Pod
from ambient.config.configset import Ref
from ambient.controlplane import AddressAllocator, ControlPlane, diff
from ambient.controlplane.cluster import ClusterIndex
from ambient.controlplane.workloads import pod_uid
from ambient.identity.ca import CertificateAuthority
from ambient.state.workload import WorkloadStatus
from tests.unit.controlplane.manifests import load, namespace, pod, service

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: a}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""

POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: a}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [b]}}]}]}
"""


def _pod(
    name: str,
    ns: str,
    app: str,
    ip: str | None,
    node: str = "node-1",
    *,
    ready: bool | None = True,
    host: str | None = None,
    phase: str | None = "Running",
    host_network: bool = False,
) -> Pod:
    text = pod(name, ns, f"{{app: {app}}}", ip, node, ports="[{containerPort: 8080, name: http}]")
    obj = load(text).objects[Ref("Pod", ns, name)]
    assert isinstance(obj, Pod)
    status = dataclasses.replace(obj.status, ready=ready, host_ip=host, phase=phase)
    spec = dataclasses.replace(obj.spec, host_network=host_network)
    return dataclasses.replace(obj, status=status, spec=spec)


def _one(text: str) -> Any:
    (obj,) = load(text).objects.values()
    return obj


def _variants() -> dict[Ref, list[Any]]:
    variants: dict[Ref, list[Any]] = {
        Ref("Namespace", "", "a"): [_one(namespace("a", "ambient")), _one(namespace("a"))],
        Ref("Service", "a", "x"): [
            _one(
                service(
                    "x", "a", "{app: x}", "[{name: http, port: 80, targetPort: http}]", "10.96.0.10"
                )
            ),
            _one(service("x", "a", "{app: y}", "[{name: http, port: 80}]", "10.96.0.11")),
        ],
        Ref("Service", "b", "h"): [_one(service("h", "b", "{app: y}", "[{port: 80}]", "None"))],
        Ref("Gateway", "a", "waypoint"): [_one(GATEWAY)],
        Ref("AuthorizationPolicy", "a", "deny"): [_one(POLICY)],
    }
    for i in range(4):
        ns, app = ("a", "x") if i % 2 == 0 else ("b", "y")
        name = f"p{i}"
        variants[Ref("Pod", ns, name)] = [
            _pod(name, ns, app, None, ready=None, phase="Pending"),
            _pod(name, ns, app, f"10.244.0.{i + 1}", host="192.168.0.1"),
            _pod(name, ns, app, f"10.244.0.{i + 1}", ready=False, host="192.168.0.1"),
            _pod(name, ns, "other", f"10.244.1.{i + 1}", f"node-{i}", host=f"192.168.0.{i + 2}"),
            _pod(name, ns, app, "10.244.9.9", host="192.168.0.1"),  # the same IP for every pod
            _pod(name, ns, app, f"10.244.0.{i + 1}", phase="Succeeded"),
            _pod(name, ns, app, "192.168.0.1", host="192.168.0.1", host_network=True),
        ]
    return variants


VARIANTS = _variants()
REFS = sorted(VARIANTS)

change = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(REFS), st.integers(0, 6)),
    st.tuples(st.just("drop"), st.sampled_from(REFS), st.just(0)),
)


def _plane() -> ControlPlane:
    return ControlPlane(CertificateAuthority.generate(), cluster=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sets(st.sampled_from(REFS)), st.lists(st.lists(change, min_size=1, max_size=3), max_size=10)
)
def test_changes_equal_a_full_build(
    initial: set[Ref], batches: list[list[tuple[str, Ref, int]]]
) -> None:
    plane = _plane()
    objects: dict[Ref, Any] = {ref: VARIANTS[ref][0] for ref in sorted(initial)}
    plane.apply_changes({ref: (obj, None) for ref, obj in objects.items()})
    for step, batch in enumerate(batches):
        before = plane.snapshot
        changes: dict[Ref, Any] = {}
        for what, ref, n in batch:
            if what == "put":
                objects[ref] = VARIANTS[ref][n % len(VARIANTS[ref])]
                changes[ref] = (objects[ref], None)
            else:
                objects.pop(ref, None)
                changes[ref] = None
        delta = plane.apply_changes(changes)
        full = ClusterIndex(AddressAllocator()).update(ConfigSet(objects=dict(objects)))[0]
        assert plane.snapshot == full, f"step {step}: {batch}"
        assert delta == diff(before, plane.snapshot), f"step {step}: {batch}"


def test_pods_without_an_ip_and_finished_pods_are_no_workloads() -> None:
    plane = _plane()
    pending = _pod("pending", "a", "x", None, ready=None, phase="Pending")
    done = _pod("done", "a", "x", "10.244.0.2", phase="Succeeded")
    host = _pod("host", "a", "x", "192.168.0.1", host_network=True)
    running = _pod("running", "a", "x", "10.244.0.3", host="192.168.0.7")
    plane.apply_changes({Ref.of(p): (p, None) for p in (pending, done, host, running)})
    assert set(plane.snapshot.workloads) == {pod_uid("a", "running")}
    assert {k: str(v) for k, v in plane.snapshot.nodes.items()} == {"node-1": "192.168.0.7"}


def test_readiness_is_health_and_addresses_are_the_api_servers() -> None:
    plane = _plane()
    svc = _one(
        service("x", "a", "{app: x}", "[{name: http, port: 80, targetPort: http}]", "10.96.3.4")
    )
    p = _pod("p", "a", "x", "10.244.0.9", ready=False)
    plane.apply_changes({Ref.of(svc): (svc, None), Ref.of(p): (p, None)})
    workload = plane.snapshot.workloads[pod_uid("a", "p")]
    assert workload.status is WorkloadStatus.UNHEALTHY
    assert [str(a) for a in workload.addresses] == ["10.244.0.9"]
    assert [str(a) for a in plane.snapshot.services["a/x.a.svc.cluster.local"].addresses] == [
        "10.96.3.4"
    ]
    ready = dataclasses.replace(p, status=dataclasses.replace(p.status, ready=True))
    delta = plane.apply_changes({Ref.of(p): (ready, None)})
    assert [w.status for w in delta.upserted] == [WorkloadStatus.HEALTHY]  # type: ignore[union-attr]


def test_a_waypoint_gateway_generates_no_objects() -> None:
    plane = _plane()
    gateway = _one(GATEWAY)
    plane.apply_changes({Ref.of(gateway): (gateway, None)})
    assert not plane.snapshot.workloads
    assert not plane.snapshot.services
    assert Ref("Deployment", "a", "waypoint") not in plane.config.objects


def test_one_pod_change_at_scale_rebuilds_nothing() -> None:
    plane = _plane()
    pods = [
        _pod(f"p{i}", "a", f"app{i % 10}", f"10.244.{i // 250}.{i % 250 + 1}") for i in range(2000)
    ]
    plane.apply_changes({Ref.of(p): (p, None) for p in pods})
    index = plane._index  # the test counts full rebuilds
    assert index.full_builds == 1
    extra = _pod("new", "a", "app1", "10.244.99.1")
    delta = plane.apply_changes({Ref.of(extra): (extra, None)})
    assert [a.uid for a in delta.upserted] == [pod_uid("a", "new")]  # type: ignore[union-attr]
    delta = plane.apply_changes({Ref.of(pods[5]): None})
    assert delta.removed == (pod_uid("a", "p5"),)
    assert index.full_builds == 1


def test_a_pods_controller_names_its_workload() -> None:
    plane = _plane()
    replica = dataclasses.replace(
        _pod("web-6d5d49b67b-vt4k7", "a", "web", "10.244.0.4"), workload=("web", "deployment")
    )
    bare = _pod("solo", "a", "solo", "10.244.0.5")
    plane.apply_changes({Ref.of(p): (p, None) for p in (replica, bare)})
    workloads = plane.snapshot.workloads
    deployed = workloads[pod_uid("a", "web-6d5d49b67b-vt4k7")]
    assert (deployed.name, deployed.workload_name, deployed.workload_type) == (
        "web-6d5d49b67b-vt4k7",
        "web",
        "deployment",
    )
    solo = workloads[pod_uid("a", "solo")]
    assert (solo.workload_name, solo.workload_type) == ("solo", "pod")
