"""``ambient logs --kubeconfig``: pods' logs read through their node's kubelet socket.

The node is this product's kubelet in the test's process (``conftest.node``'s way: a
node of the test's own on the shared dev cluster, loopback pod addresses) with the
kubelet socket ``ambient up --kubeconfig`` serves (``KubeletApi``, its ``/logs``
route wired as ``ClusterNodes`` wires it), named on the Node. ``ambient logs`` runs as
a user runs it: a process with the admin kubeconfig. Pods are real processes; their
readiness (an exec probe that finds the file the container writes after its lines)
is the signal that their lines are written.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ambient.devcluster import DevCluster
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.kube.kinds import DEPLOYMENT, NODE, POD, SERVICE_ACCOUNT
from ambient.kube.waypoints import LABEL_GATEWAY_CLASS, LABEL_GATEWAY_NAME
from ambient.kubelet.kubelet import NodeKubelet
from ambient.kubelet.logs import pod_log_source
from ambient.kubelet.node import FIELD_MANAGER
from ambient.local.kubeletapi import KubeletApi
from tests.kube.kubelet import watch_objects
from tests.kube.nodes.conftest import TAINT_KEY, KubeletNode, node_options

pytestmark = [pytest.mark.kube, pytest.mark.slow]

PRIVILEGED = {"privileged": True}
"""Runs as the mesh (root), so that it may write its readiness file in the test's folder."""
POD_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
]
WRITES_THREE = "echo one; echo two; echo three; touch ready.$POD_NAME; exec sleep 3600"
READY_FILE = {"exec": {"command": ["sh", "-c", "test -e ready.$POD_NAME"]}, "periodSeconds": 1}


@dataclass
class LogsNode:
    node: KubeletNode
    kubeconfig: Path
    socket: str

    @property
    def name(self) -> str:
        return self.node.name

    def placement(self) -> dict[str, Any]:
        return self.node.placement()


@pytest.fixture
async def logs_node(dev_cluster: DevCluster, tmp_path: Path) -> AsyncIterator[LogsNode]:
    name = f"kl-logs-{os.getpid() % 10000}-{tmp_path.name[-12:].lower().strip('_-')}"
    name = re.sub(r"[^a-z0-9-]", "-", name).strip("-")
    client = KubeClient(
        load_config(ClusterTarget(dev_cluster.kubeconfig)), field_manager=FIELD_MANAGER
    )
    socket = str(tmp_path / "kubelet.sock")
    taint = {"key": TAINT_KEY, "value": name, "effect": "NoSchedule"}
    kubelet = NodeKubelet(client, name, node_options(tmp_path, taints=(taint,), socket_path=socket))

    def source(namespace: str, pod: str, uid: str, container: str) -> Any:
        assert kubelet.pods is not None
        return pod_log_source(kubelet.pods, namespace, pod, uid, container)

    async def status() -> dict[str, Any]:
        return {}

    api = KubeletApi(client.server, lambda _ns, _name: None, lambda: [name], status, source)
    await api.start(socket)
    await kubelet.start()
    try:
        yield LogsNode(KubeletNode(name, kubelet, client), dev_cluster.kubeconfig, socket)
    finally:
        await kubelet.stop()
        await api.close()
        try:
            await client.delete(NODE.path(None, name))
        except KubeError as err:
            if err.code != 404:
                raise
        await client.close()


async def ambient(
    kubeconfig: Path, *args: str, prefix: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "ambient", "logs", "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def deployment(
    node: LogsNode,
    namespace: str,
    name: str,
    command: str,
    replicas: int = 1,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **(labels or {})}},
                "spec": {
                    **node.placement(),
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "app",
                            "image": "img",
                            "command": ["sh", "-c", command],
                            "env": POD_ENV,
                            "securityContext": PRIVILEGED,
                            "readinessProbe": READY_FILE,
                        }
                    ],
                },
            },
        },
    }


async def ready_pods(admin: KubeClient, namespace: str, app: str, count: int) -> list[str]:
    """The names of ``count`` ready pods of ``app`` (watched, not polled)."""

    def ready(pods: dict[str, dict[str, Any]]) -> list[str] | None:
        names = sorted(
            n
            for n, p in pods.items()
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        )
        return names if len(names) == count else None

    found: list[str] = await watch_objects(
        admin, POD, namespace, ready, label_selector=f"app={app}", timeout=90,
        what=f"{count} ready pod(s) of {app}",
    )  # fmt: skip
    return found


async def test_logs_of_pods_tail_deploy_selector_and_errors(
    logs_node: LogsNode, admin: KubeClient, namespace: str
) -> None:
    await admin.create(
        DEPLOYMENT.path(namespace), deployment(logs_node, namespace, "web", WRITES_THREE, 2)
    )
    first, second = await ready_pods(admin, namespace, "web", 2)
    k = logs_node.kubeconfig

    code, out, err = await ambient(k, "-n", namespace, first)
    assert (code, out) == (0, "one\ntwo\nthree\n"), err
    assert "ambient:" not in out  # the runtime's start notes are not the container's output
    assert (await ambient(k, "-n", namespace, f"pod/{first}", "--tail", "1"))[:2] == (0, "three\n")
    assert (await ambient(k, "-n", namespace, first, "--tail", "0"))[:2] == (0, "")
    assert (await ambient(k, "-n", namespace, first, "--since", "1h"))[1] == "one\ntwo\nthree\n"
    assert (await ambient(k, "-n", namespace, first, "-c", "app"))[1] == "one\ntwo\nthree\n"

    code, out, err = await ambient(k, "-n", namespace, "deploy/web", "--tail", "2")
    assert code == 0 and out == "two\nthree\n", err
    assert re.fullmatch(rf"Found 2 pods, using pod/({first}|{second})\n", err), err

    code, out, _ = await ambient(k, "-n", namespace, "-l", "app=web", "--prefix", "--tail", "1")
    assert code == 0
    assert out == f"[pod/{first}/app] three\n[pod/{second}/app] three\n"

    # errors: kubectl's words, exit 1, no traceback
    code, out, err = await ambient(k, "-n", namespace, "nope")
    assert (code, out) == (1, "")
    assert err == 'Error from server (NotFound): pods "nope" not found\n'
    code, _, err = await ambient(k, "-n", namespace, "deploy/nope")
    assert code == 1 and err == 'Error from server (NotFound): deployments.apps "nope" not found\n'
    code, _, err = await ambient(k, "-n", namespace, first, "-c", "other")
    assert code == 1 and f"container other is not valid for pod {first}" in err, err
    assert "Traceback" not in err
    code, _, err = await ambient(k, "-n", namespace, "-l", "app=none")
    assert code == 0 and err == f"No resources found in {namespace} namespace.\n"


async def test_follow_shows_new_lines_and_ends_with_the_pod(
    logs_node: LogsNode, admin: KubeClient, namespace: str
) -> None:
    ticks = "touch ready.$POD_NAME; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done"
    await admin.create(DEPLOYMENT.path(namespace), deployment(logs_node, namespace, "tick", ticks))
    (pod,) = await ready_pods(admin, namespace, "tick", 1)
    k = logs_node.kubeconfig

    # the last tick before following: every line -f shows with --tail 0 must be later
    before = 0
    for _ in range(100):  # the first tick may not be written yet: ask again, bounded
        code, out, err = await ambient(k, "-n", namespace, pod, "--tail", "1")
        assert code == 0, err
        if out:
            before = int(out.split()[1])
            break
    assert before > 0, "no tick written"
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ambient", "logs", "--kubeconfig", str(k), "-n", namespace,
        "-f", "--tail", "0", pod,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert follower.stdout is not None and follower.stderr is not None
        # ticks keep coming: the follower shows one within the bound (no readiness signal
        # is needed, nor a fixed sleep)
        line = (await asyncio.wait_for(follower.stdout.readline(), 90)).decode()
        assert re.fullmatch(r"tick \d+\n", line), line
        assert int(line.split()[1]) > before
        # the pod gone, the follower ends by itself (exit 0), as kubectl's
        await admin.delete(POD.path(namespace, pod))
        await asyncio.wait_for(follower.stdout.read(), 120)
        code = await asyncio.wait_for(follower.wait(), 30)
        err = (await follower.stderr.read()).decode()
        assert code == 0, err
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()


async def test_a_waypoint_pods_log_is_its_node_proxys_lines_about_it(
    logs_node: LogsNode, admin: KubeClient, namespace: str
) -> None:
    labels = {LABEL_GATEWAY_CLASS: "istio-waypoint", LABEL_GATEWAY_NAME: "waypoint"}
    await admin.create(
        DEPLOYMENT.path(namespace),
        deployment(logs_node, namespace, "waypoint", "touch ready.$POD_NAME; exec sleep 3600",
                   labels=labels),
    )  # fmt: skip
    (pod,) = await ready_pods(admin, namespace, "waypoint", 1)
    # STAND-IN for the node proxy's log (the node here runs no ztunnel): the lines it
    # writes, in ``ambient.logconfig``'s format, where the node's runtime puts them
    logs = logs_node.node.kubelet.options.state_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tag, other = f"[{namespace}/waypoint]", f"[{namespace}/other]"
    (logs / f"istio-system_ztunnel-{logs_node.name}_istio-proxy.log").write_text(
        "12:00:00 INFO  ambient.ztunnel  listening\n"
        f"12:00:01 INFO  ambient.waypoint {tag}  ready on 127.0.0.1:15008\n"
        f'12:00:02 INFO  ambient.access {other}  request complete path="/x"\n'
        f'12:00:03 INFO  ambient.access {tag}  request complete path="/api"\n'
    )
    k = logs_node.kubeconfig
    for ref in ("deploy/waypoint", pod):
        code, out, err = await ambient(k, "-n", namespace, ref)
        assert code == 0, err
        assert out.splitlines() == [
            f"12:00:01 INFO  ambient.waypoint {tag}  ready on 127.0.0.1:15008",
            f'12:00:03 INFO  ambient.access {tag}  request complete path="/api"',
        ]
    code, out, err = await ambient(k, "-n", namespace, "deploy/waypoint", "-c", "istio-proxy",
                                   "--tail", "1")  # fmt: skip
    assert (
        code == 0 and out == f'12:00:03 INFO  ambient.access {tag}  request complete path="/api"\n'
    ), err


async def test_a_caller_refused_by_the_api_server_or_the_socket_reads_nothing(
    logs_node: LogsNode, admin: KubeClient, namespace: str, tmp_path: Path
) -> None:
    await admin.create(
        DEPLOYMENT.path(namespace), deployment(logs_node, namespace, "web", WRITES_THREE)
    )
    (pod,) = await ready_pods(admin, namespace, "web", 1)

    # 1. a ServiceAccount with no role: the API server refuses to show it the pod
    await admin.create(
        SERVICE_ACCOUNT.path(namespace),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}},
    )
    token = await admin.create(
        SERVICE_ACCOUNT.path(namespace, "nobody", "token"),
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )  # fmt: skip
    config = yaml.safe_load(logs_node.kubeconfig.read_text())
    cluster = config["clusters"][0]
    limited = tmp_path / "limited.kubeconfig"
    limited.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "nobody", "user": {"token": token["status"]["token"]}}],
        "contexts": [{"name": "nobody", "context": {"cluster": cluster["name"], "user": "nobody"}}],
        "current-context": "nobody",
    }))  # fmt: skip
    code, out, err = await ambient(limited, "-n", namespace, pod)
    assert (code, out) == (1, "")
    assert "forbidden" in err.lower() and "Traceback" not in err, err

    if os.geteuid() != 0:
        pytest.skip("needs root: the socket is handed to another user, setpriv drops capabilities")
    # 2. a caller the API server lets see the pod, but who is not the nodes' user: the
    # socket is the nodes' user's only (0600); root without its capabilities stands for
    # another user here (the socket is handed to uid 65534, as if that user ran the nodes)
    os.chown(logs_node.socket, 65534, 65534)
    assert os.stat(logs_node.socket).st_mode & 0o777 == 0o600
    unprivileged = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
    code, out, err = await ambient(logs_node.kubeconfig, "-n", namespace, pod, prefix=unprivileged)
    assert (code, out) == (1, "")
    assert "permission denied" in err and "Traceback" not in err, err
    # the nodes' user reads it (and nothing else changed)
    os.chown(logs_node.socket, 0, 0)
    assert (await ambient(logs_node.kubeconfig, "-n", namespace, pod))[:2] == (
        0,
        "one\ntwo\nthree\n",
    )
