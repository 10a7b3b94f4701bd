"""``MeshIndex``: applying changes one by one gives exactly what a full rebuild gives.

The property test drives random sequences of changes (pods and Deployments added,
removed, relabelled, moved; label overrides of Deployment pods; health; policies;
namespaces and Services, which take the rebuild path) through one ``MeshIndex`` and
after each step compares its snapshot with ``build_snapshot``-style full builds of
the same inputs (a fresh ``MeshIndex`` on the same allocator), and its ``Delta`` with
the full ``diff`` of the two snapshots.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambient.config import ConfigSet
from ambient.config.configset import Ref
from ambient.config.frozen import FrozenMap
from ambient.controlplane import AddressAllocator, diff, with_label
from ambient.controlplane.expand import LabelOverrides
from ambient.controlplane.index import MeshIndex
from ambient.controlplane.workloads import pod_uid
from tests.unit.controlplane.manifests import load, namespace, pod

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
      nodeName: {node}
      containers: [{{name: c, image: i, command: [sleep], ports: [{{containerPort: 8080, name: http}}]}}]
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 80, targetPort: {target}}}]
"""

POLICY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  {selector}
  action: {action}
  rules: [{{from: [{{source: {{namespaces: [a]}}}}]}}]
"""

PEER = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {ns}}}
spec: {{mtls: {{mode: {mode}}}}}
"""

WORKLOAD_ENTRY = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: b}
spec: {address: 10.9.0.1, labels: {app: y}}
"""


def _pod(name: str, ns: str, app: str, ip: str | None, node: str) -> str:
    return pod(name, ns, f"{{app: {app}}}", ip, node, ports="[{containerPort: 8080, name: http}]")


def _variants() -> dict[Ref, list[object]]:
    """Every object the test may put in the config, each with a few versions."""
    docs: dict[Ref, list[str]] = {
        Ref("Namespace", "", "a"): [namespace("a", "ambient"), namespace("a")],
        Ref("Namespace", "", "b"): [namespace("b"), namespace("b", "ambient")],
        Ref("Service", "a", "x"): [
            SERVICE.format(name="x", ns="a", app="x", target="http"),
            SERVICE.format(name="x", ns="a", app="y", target=8080),
        ],
        Ref("Service", "b", "y"): [SERVICE.format(name="y", ns="b", app="y", target=9090)],
        Ref("Deployment", "a", "dx"): [
            DEPLOYMENT.format(name="dx", ns="a", replicas=2, app="x", node="node-1"),
            DEPLOYMENT.format(name="dx", ns="a", replicas=3, app="x", node="node-1"),
            DEPLOYMENT.format(name="dx", ns="a", replicas=1, app="y", node="node-3"),
        ],
        Ref("Deployment", "b", "dy"): [
            DEPLOYMENT.format(name="dy", ns="b", replicas=2, app="y", node="node-2"),
        ],
        Ref("AuthorizationPolicy", "a", "allow-x"): [
            POLICY.format(
                name="allow-x", ns="a", selector="selector: {matchLabels: {app: x}}", action="ALLOW"
            ),
            POLICY.format(name="allow-x", ns="a", selector="", action="DENY"),
        ],
        Ref("PeerAuthentication", "a", "strict"): [
            PEER.format(name="strict", ns="a", mode="STRICT"),
            PEER.format(name="strict", ns="a", mode="PERMISSIVE"),
        ],
        Ref("WorkloadEntry", "b", "vm"): [WORKLOAD_ENTRY],
    }
    for i in range(4):
        ns, app = ("a", "x") if i % 2 == 0 else ("b", "y")
        docs[Ref("Pod", ns, f"p{i}")] = [
            _pod(f"p{i}", ns, app, None, "node-1"),
            _pod(f"p{i}", ns, app, f"10.0.0.{i + 1}", "node-2"),
            _pod(f"p{i}", ns, "other", None, f"node-{i + 1}"),
        ]
    variants: dict[Ref, list[object]] = {}
    for ref, texts in docs.items():
        variants[ref] = [load(text).objects[ref] for text in texts]
    return variants


VARIANTS = _variants()
REFS = sorted(VARIANTS)

change = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(REFS), st.integers(0, 2)),
    st.tuples(st.just("drop"), st.sampled_from(REFS), st.just(0)),
    st.tuples(st.just("label"), st.sampled_from(REFS), st.integers(0, 2)),
    st.tuples(st.just("override"), st.just(None), st.integers(0, 5)),
    st.tuples(st.just("health"), st.just(None), st.integers(0, 7)),
)


def _config(objects: dict[Ref, object]) -> ConfigSet:
    return ConfigSet(objects=dict(objects))  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sets(st.sampled_from(REFS)),
    st.lists(change, min_size=1, max_size=12),
    st.booleans(),
)
def test_incremental_equals_full_rebuild(
    initial: set[Ref], changes: list[tuple[str, Ref | None, int]], track_health: bool
) -> None:
    allocator = AddressAllocator()
    objects: dict[Ref, object] = {ref: VARIANTS[ref][0] for ref in sorted(initial)}
    overrides: dict[tuple[str, str], FrozenMap[str, str | None]] = {}
    ready: set[str] | None = set() if track_health else None
    index = MeshIndex(allocator)
    config = _config(objects)
    index.update(config, FrozenMap(overrides), ready)
    for step, (what, ref, n) in enumerate(changes):
        before = index.snapshot
        if what == "put" and ref is not None:
            objects[ref] = VARIANTS[ref][n % len(VARIANTS[ref])]
            config = _config(objects)
        elif what == "drop" and ref is not None:
            objects.pop(ref, None)
            config = _config(objects)
        elif what == "label" and ref is not None and ref in objects:
            config = with_label(config, ref.kind, ref.namespace, ref.name, "rev", f"r{n}")
            objects = dict(config.objects)
        elif what == "override":
            pods = sorted(
                (w.namespace, w.name)
                for w in before.workloads.values()
                if w.local and w.workload_type == "deployment"
            )
            if pods:
                key = pods[n % len(pods)]
                value = None if n % 3 == 0 else f"o{n}"
                overrides = {**overrides, key: FrozenMap({"app" if n % 2 else "rev": value})}
        elif what == "health" and ready is not None:
            uids = sorted(uid for uid, w in before.workloads.items() if w.local)
            if uids:
                ready ^= {uids[n % len(uids)]}
        frozen_overrides: LabelOverrides = FrozenMap(overrides)
        snapshot, delta = index.update(config, frozen_overrides, ready)
        full = MeshIndex(allocator).update(config, frozen_overrides, ready)[0]
        assert snapshot == full, f"step {step}: {what} {ref} {n}"
        assert delta == diff(before, snapshot), f"step {step}: {what} {ref} {n}"


def test_a_pod_label_recomputes_one_workload() -> None:
    docs = [namespace("a", "ambient")]
    docs += [_pod(f"p{i}", "a", f"app{i % 10}", None, "node-1") for i in range(300)]
    docs += [SERVICE.format(name=f"s{i}", ns="a", app=f"app{i}", target="http") for i in range(10)]
    config = load(*docs)
    index = MeshIndex(AddressAllocator())
    index.update(config)
    before = index.snapshot
    changed = with_label(config, "Pod", "a", "p7", "app", "app3")
    snapshot, delta = index.update(changed)
    assert index.full_builds == 1  # only the first build was a full one
    uid = pod_uid("a", "p7")
    assert [a.uid for a in delta.upserted] == [uid]  # type: ignore[union-attr]
    assert list(snapshot.workloads[uid].services) == ["a/s3.a.svc.cluster.local"]
    assert list(before.workloads[uid].services) == ["a/s7.a.svc.cluster.local"]
    untouched = pod_uid("a", "p8")
    assert snapshot.workloads[untouched] is before.workloads[untouched]


def test_namespace_change_rebuilds() -> None:
    config = load(namespace("a"), _pod("p", "a", "x", None, "node-1"))
    index = MeshIndex(AddressAllocator())
    index.update(config)
    _, delta = index.update(
        with_label(config, "Namespace", "", "a", "istio.io/dataplane-mode", "ambient")
    )
    assert index.full_builds == 2
    (workload,) = delta.upserted
    assert dataclasses.asdict(workload)["tunnel_protocol"].name == "HBONE"
