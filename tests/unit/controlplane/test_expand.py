"""Deployment expansion: stable Kubernetes-style names, replicas, node spread, labels."""

from __future__ import annotations

import re

import pytest

from ambient.config import Deployment
from ambient.controlplane import expand_deployment, scheduled_pods, template_hash
from tests.unit.controlplane.manifests import deployment, load, pod

NAME = re.compile(r"web-[bcdfghjklmnpqrstvwxz2456789]{10}-[bcdfghjklmnpqrstvwxz2456789]{5}")


def web(
    replicas: int = 1, labels: str = "{app: x}", node: str = "node-1", annotations: str = "{}"
) -> Deployment:
    manifest = deployment(
        "web", replicas=replicas, labels=labels, node=node, annotations=annotations
    )
    (found,) = load(manifest).deployments()
    return found


def names(d: Deployment) -> list[str]:
    return [p.meta.name for p in expand_deployment(d)[0]]


def test_names_look_like_kubernetes_and_are_stable() -> None:
    got = names(web(replicas=3))
    assert len(got) == len(set(got)) == 3
    assert all(NAME.fullmatch(n) for n in got)
    assert got == names(web(replicas=3))
    hashes = {n.split("-")[1] for n in got}
    assert hashes == {template_hash(web().spec.template)}


def test_scaling_keeps_existing_names() -> None:
    assert names(web(replicas=5))[:2] == names(web(replicas=2))
    assert names(web(replicas=0)) == []


def test_template_change_renames_annotation_does_not() -> None:
    base = names(web(replicas=2))
    assert names(web(replicas=2, labels="{app: y}")) != base
    assert names(web(replicas=2, node="node-3")) != base
    assert names(web(replicas=2, annotations='{ambient.io/nodes: "node-1,node-2"}')) == base


def test_long_names_are_truncated_like_generate_name() -> None:
    long = "d" * 60
    (d,) = load(deployment(long)).deployments()
    (name,) = names(d)
    assert len(name) == 63 and name.startswith(long[:58])


def test_pod_labels_and_annotations() -> None:
    (d,) = load(deployment("web", labels="{app: web, version: v1}")).deployments()
    (p,) = expand_deployment(d)[0]
    assert dict(p.meta.labels) == {
        "app": "web",
        "version": "v1",
        "pod-template-hash": template_hash(d.spec.template),
    }
    assert p.meta.namespace == "default" and p.spec.service_account_name == "default"


@pytest.mark.parametrize(
    ("annotation", "replicas", "nodes", "warning"),
    [
        (None, 3, ["node-1"] * 3, None),
        ('"node-1,node-2"', 3, ["node-1", "node-2", "node-1"], None),
        ('" node-2 , node-3 "', 2, ["node-2", "node-3"], None),
        ('"node-2,Bad_Node"', 2, ["node-2", "node-2"], "invalid name 'Bad_Node'"),
        ('","', 2, ["node-1", "node-1"], "no valid node names; replicas run on node-1"),
    ],
)
def test_node_spread_annotation(
    annotation: str | None, replicas: int, nodes: list[str], warning: str | None
) -> None:
    annotations = "{}" if annotation is None else f"{{ambient.io/nodes: {annotation}}}"
    (d,) = load(deployment("web", replicas=replicas, annotations=annotations)).deployments()
    pods, warnings = expand_deployment(d)
    assert [p.spec.node_name for p in pods] == nodes
    if warning is None:
        assert warnings == ()
    else:
        assert any(warning in w and "ambient.io/nodes" in w for w in warnings)


def test_scheduled_pods_with_owner_and_overrides() -> None:
    config = load(deployment("web", replicas=2, labels="{app: web}"), pod("solo"))
    first, _ = scheduled_pods(config)
    target = next(s for s in first if s.owner is not None)
    key = (target.pod.meta.namespace, target.pod.meta.name)
    pods, _ = scheduled_pods(config, {key: {"app": None, "extra": "yes"}})
    by_name = {s.pod.meta.name: s for s in pods}
    assert by_name["solo"].workload_name == "solo" and by_name["solo"].workload_type == "pod"
    changed = by_name[key[1]]
    assert changed.workload_name == "web" and changed.workload_type == "deployment"
    assert "app" not in changed.pod.meta.labels and changed.pod.meta.labels["extra"] == "yes"
