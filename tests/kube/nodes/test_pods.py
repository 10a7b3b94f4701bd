"""This product's kubelet runs a node's pods on the dev cluster (real processes, real API server).

Each test has a node of its own (``conftest.node``) and a namespace of its own; what the
kubelet writes is watched through the API server (``tests.kube.kubelet.watch_objects``:
list, then watch, bounded), never slept on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ambient.devcluster import DevCluster
from ambient.kube.api import KubeClient
from ambient.kube.kinds import DEPLOYMENT, LEASE, NODE, POD
from tests.kube.conftest import Kubectl
from tests.kube.kubelet import watch_objects, watch_until
from tests.kube.nodes.conftest import KubeletNode

pytestmark = [pytest.mark.kube, pytest.mark.slow]

SERVER = [sys.executable, "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
PRIVILEGED = {"privileged": True}
"""For containers that run the test runner's Python: it lives under /root (0700), which a
pod's default user (65534) cannot enter; a privileged container runs as the mesh."""


def _condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _pod(node: KubeletNode, name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            **node.placement(),
            "containers": [{"name": "app", "image": "img", **container}],
            **spec,
        },
    }


async def test_node_registers_ready_heartbeats_and_goes_not_ready(
    node: KubeletNode, admin: KubeClient
) -> None:
    obj = await admin.get(NODE.path(None, node.name))
    assert _condition(obj, "Ready") == "True"
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert _condition(obj, kind) == "False"
    assert obj["metadata"]["labels"]["kubernetes.io/os"] == "linux"
    assert obj["metadata"]["labels"]["kubernetes.io/hostname"] == node.name
    assert obj["spec"]["podCIDR"] == node.kubelet.registration.pod_cidr != ""
    assert {a["type"] for a in obj["status"]["addresses"]} == {"InternalIP", "Hostname"}
    assert int(obj["status"]["allocatable"]["pods"]) > 0
    lease = await admin.get(LEASE.path("kube-node-lease", node.name))
    assert lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    first = lease["spec"]["renewTime"]
    await watch_until(
        admin,
        LEASE,
        "kube-node-lease",
        node.name,
        lambda lease: lease and lease["spec"]["renewTime"] != first,
        timeout=15,
        what="the node's Lease renewed",
    )
    await node.kubelet.stop()
    down = await admin.get(NODE.path(None, node.name))
    assert _condition(down, "Ready") == "False"
    ready = next(c for c in down["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "KubeletNotReady"


async def test_deployment_becomes_available_and_pods_report_status(
    node: KubeletNode, admin: KubeClient, namespace: str, kubectl: Kubectl, dev_cluster: DevCluster
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    **node.placement(),
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11",
                            "command": SERVER,
                            "ports": [{"containerPort": 8080}],
                            "securityContext": PRIVILEGED,
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }
    await admin.create(DEPLOYMENT.path(namespace), deployment)
    done = await asyncio.to_thread(
        kubectl, "rollout", "status", "deploy/web", "-n", namespace, "--timeout=90s", timeout=120
    )
    assert "successfully rolled out" in done.stdout
    got = await admin.get(DEPLOYMENT.path(namespace, "web"))
    assert _condition(got, "Available") == "True"
    assert got["status"]["readyReplicas"] == 2
    pods, _ = await admin.list(POD.path(namespace))
    cidr = node.kubelet.registration.pod_cidr
    twin = "127." + cidr.split(".", 1)[1].rsplit(".", 1)[0] + "."  # loopback twins of the range
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        assert status["podIP"].startswith(twin) and status["podIPs"] == [{"ip": status["podIP"]}]
        assert status["hostIP"] == "127.0.0.1" and status["startTime"]
        for kind in ("PodScheduled", "PodReadyToStartContainers", "Initialized"):
            assert _condition(pod, kind) == "True", kind
        assert _condition(pod, "ContainersReady") == "True"
        (cs,) = status["containerStatuses"]
        assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
        assert "startedAt" in cs["state"]["running"]
        assert cs["image"] == "python:3.11"
        assert cs["imageID"].startswith("host://") and cs["containerID"].startswith("ambient://")
    assert len({p["status"]["podIP"] for p in pods}) == 2


async def test_crash_loop_backs_off(node: KubeletNode, admin: KubeClient, namespace: str) -> None:
    pod = _pod(node, "crash", {"command": ["sh", "-c", "echo crashing; exit 3"]})
    await admin.create(POD.path(namespace), pod)
    delays: list[str] = []
    backing_off_ready: set[str] = set()  # Ready while waiting in CrashLoopBackOff

    def seen(obj: dict[str, Any] | None) -> bool:
        statuses = ((obj or {}).get("status") or {}).get("containerStatuses") or []
        if not statuses:
            return False
        waiting = statuses[0]["state"].get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            backing_off_ready.add(str(_condition(obj, "Ready")))
            delay = waiting["message"].split()[1]
            if delay not in delays:
                delays.append(delay)
        return statuses[0]["restartCount"] >= 3 and len(delays) >= 3

    await watch_until(admin, POD, namespace, "crash", seen, timeout=60, what="3 restarts")
    assert delays[:3] == ["1s", "2s", "4s"]  # doubling back-off
    got = await admin.get(POD.path(namespace, "crash"))
    last = got["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert backing_off_ready == {"False"}  # (between restarts it runs, briefly Ready)


async def test_container_without_command_is_create_container_error(
    node: KubeletNode, admin: KubeClient, namespace: str
) -> None:
    await admin.create(POD.path(namespace), _pod(node, "nginx", {"image": "nginx:1.27"}))

    def waiting(obj: dict[str, Any] | None) -> dict[str, Any] | None:
        statuses = ((obj or {}).get("status") or {}).get("containerStatuses") or []
        state = statuses[0]["state"].get("waiting") if statuses else None
        return state if state and state.get("reason") == "CreateContainerError" else None

    state = await watch_until(admin, POD, namespace, "nginx", waiting, what="CreateContainerError")
    assert "has no command" in state["message"] and "nginx:1.27" in state["message"]


async def test_env_from_the_downward_api(
    node: KubeletNode, admin: KubeClient, namespace: str
) -> None:
    env = [
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MY_APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "GREETING", "value": "hi $(MY_APP)"},
    ]
    await admin.create(
        POD.path(namespace), _pod(node, "env", {"command": ["sleep", "600"], "env": env})
    )
    got = await watch_until(
        admin, POD, namespace, "env", lambda p: p if _condition(p, "Ready") == "True" else None
    )
    run = node.kubelet.pods.supervisor.pod_status(namespace, "env")  # type: ignore[union-attr]
    assert run is not None and run.containers[0].pid is not None
    environ_file = Path(f"/proc/{run.containers[0].pid}/environ")
    raw = (await asyncio.to_thread(environ_file.read_bytes)).split(b"\0")
    environ = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    assert environ["MY_IP"] == got["status"]["podIP"]
    assert (environ["MY_NODE"], environ["MY_APP"], environ["GREETING"]) == (
        node.name,
        "env",
        "hi env",
    )
    assert environ["POD_NAMESPACE"] == namespace  # the local contract's variables too
    assert "ALL_PROXY" in environ  # the pod reaches the mesh through its ztunnel's SOCKS5


async def test_delete_stops_within_grace_and_the_replica_set_replaces(
    node: KubeletNode, admin: KubeClient, namespace: str, kubectl: Kubectl
) -> None:
    stubborn = _pod(
        node,
        "stubborn",
        {"command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]},
        terminationGracePeriodSeconds=2,
    )
    await admin.create(POD.path(namespace), stubborn)
    await watch_until(admin, POD, namespace, "stubborn", lambda p: _condition(p, "Ready") == "True")
    run = node.kubelet.pods.supervisor.pod_status(namespace, "stubborn")  # type: ignore[union-attr]
    assert run is not None and run.containers[0].pid is not None
    pid = run.containers[0].pid
    began = time.monotonic()
    await asyncio.to_thread(kubectl, "delete", "pod", "stubborn", "-n", namespace, "--timeout=30s")
    took = time.monotonic() - began
    assert 1.5 <= took < 10, took  # SIGTERM ignored: killed at the end of the 2 s grace
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # a Deployment's pod deleted: its ReplicaSet makes another, which runs here
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rs", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {
                "metadata": {"labels": {"app": "rs"}},
                "spec": {
                    **node.placement(),
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "app", "image": "img", "command": ["sleep", "600"]}],
                },
            },
        },
    }
    await admin.create(DEPLOYMENT.path(namespace), deployment)

    def ready_names(pods: dict[str, dict[str, Any]]) -> set[str]:
        return {n for n, p in pods.items() if _condition(p, "Ready") == "True"}

    first = await watch_objects(admin, POD, namespace, ready_names, label_selector="app=rs")
    (old,) = first
    began = time.monotonic()
    await asyncio.to_thread(kubectl, "delete", "pod", old, "-n", namespace, "--timeout=30s")
    assert time.monotonic() - began < 4  # sleep dies of SIGTERM at once, well within 5 s
    replaced = await watch_objects(
        admin, POD, namespace, lambda pods: ready_names(pods) - {old}, label_selector="app=rs"
    )
    assert replaced and old not in replaced


async def test_stop_and_start_again_keeps_address_and_counts_restarts(
    node: KubeletNode, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    await admin.create(POD.path(namespace), _pod(node, "again", {"command": ["sleep", "600"]}))
    first = await watch_until(
        admin, POD, namespace, "again", lambda p: p if _condition(p, "Ready") == "True" else None
    )
    await node.kubelet.stop()
    stopped = await admin.get(POD.path(namespace, "again"))
    term = stopped["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 128 + signal.SIGTERM
    from ambient.kubelet.kubelet import NodeKubelet
    from tests.kube.nodes.conftest import node_options

    again = NodeKubelet(node.client, node.name, node_options(tmp_path / "again"))
    await again.start()
    try:
        back = await watch_until(
            admin,
            POD,
            namespace,
            "again",
            lambda p: (
                p
                if _condition(p, "Ready") == "True"
                and p["status"]["containerStatuses"][0]["restartCount"] == 1
                else None
            ),
        )
        assert back["status"]["podIP"] == first["status"]["podIP"]
    finally:
        await again.stop()


def _uid_and_sight(pid: int, path: Path) -> tuple[int, bool]:
    """Process ``pid``'s effective uid, and whether ``path`` exists in its mount namespace."""
    sees = Path(f"/proc/{pid}/root{path}").exists()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2]), sees
    raise AssertionError(f"no Uid line for {pid}")


@pytest.mark.root
async def test_pods_run_isolated_from_the_mesh_state(
    node: KubeletNode, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("pods run as other users only when the kubelet is root")
    secret = tmp_path / "state" / "secret-key.pem"  # the node's state folder (conftest)
    secret.write_text("not for pods\n")
    # Ready only if the exec probe, run as the container, cannot read the key
    container = {
        "command": ["sleep", "600"],
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", f"! cat {secret}"]},
            "periodSeconds": 1,
        },
    }
    await admin.create(POD.path(namespace), _pod(node, "plain", container))
    await admin.create(
        POD.path(namespace), _pod(node, "privileged", {**container, "securityContext": PRIVILEGED})
    )
    for name in ("plain", "privileged"):
        await watch_until(
            admin, POD, namespace, name, lambda p: p if _condition(p, "Ready") == "True" else None
        )
    pods = node.kubelet.pods
    assert pods is not None
    uids = {}
    for name in ("plain", "privileged"):
        run = pods.supervisor.pod_status(namespace, name)
        assert run is not None and run.containers[0].pid is not None
        uids[name], sees = _uid_and_sight(run.containers[0].pid, secret)
        assert not sees and secret.is_file(), name
    # 65534 without a runAsUser; the privileged one as the mesh (root), the folder hidden
    assert uids == {"plain": 65534, "privileged": 0}
