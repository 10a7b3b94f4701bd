"""A cluster pod's workload name and type from its controller owner reference (Istio's rules)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ambient.config import Pod
from ambient.kube.convert import convert, view
from ambient.kube.kinds import POD
from ambient.kube.owners import controller_of, workload_of

BASE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-6d5d49b67b-vt4k7", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {"nodeName": "node-1", "containers": [{"name": "app"}]},
    "status": {"phase": "Running", "podIP": "10.244.0.5"},
}


def _pod(
    name: str, owner: tuple[str, str] | None, labels: dict[str, str] | None = None, **ref: Any
) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    meta = raw["metadata"]
    meta["name"] = name
    meta["labels"].update(labels or {})
    if owner is not None:
        meta["generateName"] = name[: name.rindex("-") + 1]
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-a-controller", "uid": "u0"},
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "u1",
             "controller": True, "blockOwnerDeletion": True, **ref},
        ]  # fmt: skip
    return raw


def _workload(raw: dict[str, Any]) -> tuple[str, str] | None:
    converted = convert(view(POD, raw))
    assert converted.errors == ()
    assert isinstance(converted.obj, Pod)
    return converted.obj.workload


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            _pod("web-6d5d49b67b-vt4k7", ("ReplicaSet", "web-6d5d49b67b"),
                 {"pod-template-hash": "6d5d49b67b"}),
            ("web", "deployment"),
            id="deployment",
        ),
        pytest.param(
            _pod("rs-x7k2p", ("ReplicaSet", "rs"), {"pod-template-hash": "6d5d49b67b"}),
            ("rs", "pod"),
            id="replicaset-not-of-a-deployment",
        ),
        pytest.param(
            _pod("report-28977840-abcde", ("Job", "report-28977840")),
            ("report", "cronjob"),
            id="cronjob",
        ),
        pytest.param(
            _pod("migrate-abcde", ("Job", "migrate")), ("migrate", "job"), id="job"
        ),
        pytest.param(
            _pod("batch-12-abcde", ("Job", "batch-12")), ("batch-12", "job"), id="job-short-digits"
        ),
        pytest.param(
            _pod("ztunnel-k8x2z", ("DaemonSet", "ztunnel")), ("ztunnel", "pod"), id="daemonset"
        ),
        pytest.param(_pod("web-1", None), ("web-1", "pod"), id="no-owner"),
    ],
)  # fmt: skip
def test_the_controller_names_the_workload(raw: dict[str, Any], expected: tuple[str, str]) -> None:
    assert _workload(raw) == expected


def test_a_pod_with_a_fixed_name_keeps_it_and_only_the_controller_counts() -> None:
    stateful = _pod("db-0", ("StatefulSet", "db"))
    del stateful["metadata"]["generateName"]  # a StatefulSet names its pods itself
    assert _workload(stateful) == ("db-0", "pod")
    no_controller = _pod("web-abcde", ("ReplicaSet", "web"), controller=False)
    assert _workload(no_controller) == ("web-abcde", "pod")
    assert controller_of({"generateName": "x-", "ownerReferences": ["junk", {"kind": 1}]}) is None


def test_the_view_keeps_only_the_controller_and_an_owner_change_is_a_change() -> None:
    raw = _pod("web-6d5d49b67b-vt4k7", ("ReplicaSet", "web-6d5d49b67b"))
    meta = view(POD, raw)["metadata"]
    assert meta["ownerReferences"] == [
        {"kind": "ReplicaSet", "name": "web-6d5d49b67b", "controller": True}
    ]
    adopted = copy.deepcopy(raw)
    adopted["metadata"]["ownerReferences"][1]["name"] = "other"
    assert view(POD, adopted) != view(POD, raw)
    assert "ownerReferences" not in view(POD, _pod("web-1", None))["metadata"]


def test_a_hash_that_is_not_the_names_suffix_is_no_deployment() -> None:
    labels = {"pod-template-hash": "abc"}
    assert workload_of("p", labels, {"kind": "ReplicaSet", "name": "webabc"}) == ("webabc", "pod")
    assert workload_of("p", {}, {"kind": "ReplicaSet", "name": "web-abc"}) == ("web-abc", "pod")
