"""The ztunnel pod's shape, its listeners, and exec's pod choice (``kubelet.ztunnel``, ``kube.podexec``)."""

from __future__ import annotations

from pathlib import Path

from ambient.kube.podexec import pick_pod, selector_text
from ambient.kubelet.ztunnel import ZtunnelConfig, listening, ztunnel_pod


def test_ztunnel_pod(tmp_path: Path) -> None:
    config = ZtunnelConfig("10.0.0.1:15012", "10.0.0.1:15010", tmp_path)
    pod = ztunnel_pod("node-1", "uid-1", config)
    assert pod["metadata"]["name"] == "ztunnel-node-1"
    assert pod["metadata"]["namespace"] == "istio-system"
    assert pod["metadata"]["labels"]["app"] == "ztunnel"
    assert pod["metadata"]["ownerReferences"][0] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "node-1",
        "uid": "uid-1",
    }
    spec = pod["spec"]
    assert spec["nodeName"] == "node-1" and spec["serviceAccountName"] == "ztunnel"
    args = spec["containers"][0]["args"]
    assert args[args.index("--token-file") + 1] == str(tmp_path / "istio-token")
    assert args[args.index("--control-plane") + 1] == "10.0.0.1:15012"
    other = ztunnel_pod("node-1", "uid-1", ZtunnelConfig("10.0.0.2:15012", "x", tmp_path))
    key = "ambient.io/ztunnel-spec"
    assert pod["metadata"]["annotations"][key] != other["metadata"]["annotations"][key]


def test_listening() -> None:
    dump = {
        "workloads": [
            {"uid": "K//Pod/ns/a", "namespace": "ns", "name": "a", "workloadIps": ["10.244.1.2"],
             "protocol": "TCP"},
            {"uid": "K//Pod/ns/b", "namespace": "ns", "name": "b", "workloadIps": ["10.244.1.3"],
             "protocol": "HBONE"},
        ],
        "listeners": {
            "K//Pod/ns/a": {"socks5": True},
            "K//Pod/ns/b": {"netns": "n", "redirected": False},
        },
    }  # fmt: skip
    assert listening(dump, "ns", "a", "10.244.1.2")
    assert not listening(dump, "ns", "a", "10.244.1.9")  # an older pod of that name
    assert not listening(dump, "ns", "b", "10.244.1.3")  # enrolled, not redirected yet
    assert not listening(dump, "ns", "c", "10.244.1.4")
    # a waypoint pod: no listeners of its own, hosted by the node proxy on its address
    dump["waypoints"] = [{"workload": "K//Pod/ns/w", "namespace": "ns", "name": "w",
                          "address": "10.244.1.5", "ready": False}]  # fmt: skip
    assert listening(dump, "ns", "w", "10.244.1.5")
    assert not listening(dump, "ns", "w", "10.244.1.6")


def test_pick_pod_and_selector() -> None:
    def pod(name: str, phase: str, ready: bool, created: str, deleting: bool = False) -> dict:  # type: ignore[type-arg]
        meta = {"name": name, "creationTimestamp": created}
        if deleting:
            meta["deletionTimestamp"] = created
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        return {"metadata": meta, "status": {"phase": phase, "conditions": [condition]}}

    pods = [
        pod("a", "Running", False, "2026-01-01T00:00:01Z"),
        pod("b", "Running", True, "2026-01-01T00:00:03Z"),
        pod("c", "Running", True, "2026-01-01T00:00:02Z"),
        pod("d", "Pending", True, "2026-01-01T00:00:00Z"),
        pod("e", "Running", True, "2026-01-01T00:00:00Z", deleting=True),
    ]
    chosen = pick_pod(pods)
    assert chosen is not None and chosen["metadata"]["name"] == "c"
    assert pick_pod([pods[3]]) is None
    selector = {
        "matchLabels": {"app": "web", "tier": "x"},
        "matchExpressions": [
            {"key": "v", "operator": "In", "values": ["1", "2"]},
            {"key": "w", "operator": "DoesNotExist"},
        ],
    }
    assert selector_text(selector) == "app=web,tier=x,v in (1,2),!w"
