"""A mesh pod's metrics read by its node (``ambient.kubelet.podmetrics``), through the
kubelet socket's ``/podport`` (``ambient.local.kubeletapi``) as ``ambient dashboard
--kubeconfig`` asks it (``ambient.kube.podexec.kubelet_get``).

The pod's ports are real ``AdminServer`` listeners on loopback with Prometheus text from
a real registry. STAND-IN for the node's pod table and the pod's network: ``_Pods``
holds the pods a node runs, and its dialer connects where the pod's port listens (the
harness's free ports, not 15020/15021; with ``--netns`` the real dialer connects from
inside the pod's namespace, tested end to end by ``tests/kube/nodes/test_seed_guide.py``).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from ambient.httpd import AdminServer, Request, Response
from ambient.kube.api import KubeError
from ambient.kube.podexec import kubelet_get
from ambient.kubelet.network import plain_dial
from ambient.kubelet.podmetrics import read_pod_port
from ambient.kubelet.podspec import KubePod
from ambient.local.kubeletapi import KubeletApi

WAYPOINT_LABELS = {"gateway.networking.k8s.io/gateway-class-name": "istio-waypoint"}


@dataclass
class _Running:
    pod: KubePod
    ip: str


@dataclass
class _Pods:
    """STAND-IN for ``NodePods`` (see the module docstring)."""

    node: str
    ports: dict[int, int]  # the pod's port -> where this test's listener is
    pods: dict[tuple[str, str], _Running] = field(default_factory=dict)
    dialed: list[tuple[str, int]] = field(default_factory=list)

    def add(self, namespace: str, name: str, uid: str, labels: dict[str, str]) -> None:
        pod = KubePod(namespace, name, uid, self.node, "default", (), labels=labels)
        self.pods[(namespace, name)] = _Running(pod, "127.0.0.1")

    def network(self, _pod: KubePod) -> _Pods:
        return self

    def dialer(self, _pod: KubePod, _ip: str) -> Any:
        async def dial(host: str, port: int) -> socket.socket:
            self.dialed.append((host, port))
            return await plain_dial(host, self.ports.get(port, 1))

        return dial


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[_Pods, str]]:
    registry = CollectorRegistry()
    requests = Counter("istio_requests_total", "requests", ["response_code"], registry=registry)
    requests.labels("200").inc(7)

    def metrics(_request: Request) -> Response:
        return Response(200, generate_latest(registry), "text/plain; version=0.0.4")

    def ready(_request: Request) -> Response:
        return Response(200, b"ready\n", "text/plain")

    servers = [AdminServer({"/stats/prometheus": metrics, "/metrics": metrics}),
               AdminServer({"/healthz/ready": ready})]  # fmt: skip
    metrics_at = (await servers[0].start("127.0.0.1", 0))[1]
    ready_at = (await servers[1].start("127.0.0.1", 0))[1]
    pods = _Pods("node-1", {15020: metrics_at, 15021: ready_at})
    pods.add("shop", "waypoint-1", "uid-w", WAYPOINT_LABELS)
    pods.add("shop", "web-1", "uid-a", {"app": "web"})
    pods.add("istio-system", "ztunnel-node-1", "uid-z", {"app": "ztunnel"})

    async def status() -> dict[str, Any]:
        return {}

    async def pod_port(ns: str, name: str, uid: str, port: int, path: str) -> dict[str, Any]:
        return await read_pod_port(pods, ns, name, uid, port, path)  # type: ignore[arg-type]

    api = KubeletApi("https://api", lambda _n, _p: None, lambda: ["node-1"], status,
                     pod_port=pod_port)  # fmt: skip
    socket_path = str(tmp_path / "kubelet.sock")
    await api.start(socket_path)
    try:
        yield pods, socket_path
    finally:
        await api.close()
        for server in servers:
            await server.close()


def _query(name: str, uid: str, port: int, path: str, namespace: str = "shop") -> str:
    return f"/podport?namespace={namespace}&name={name}&uid={uid}&port={port}&path={path}"


async def test_a_waypoint_pods_metrics_and_readiness_are_read_by_its_node(
    node: tuple[_Pods, str],
) -> None:
    pods, sock = node
    answer = await kubelet_get("node-1", sock, _query("waypoint-1", "uid-w", 15020,
                                                      "/stats/prometheus"))  # fmt: skip
    assert answer["status"] == 200 and answer["content_type"].startswith("text/plain")
    assert 'istio_requests_total{response_code="200"} 7.0' in answer["text"]
    assert (await kubelet_get("node-1", sock, _query("waypoint-1", "uid-w", 15021,
                                                     "/healthz/ready")))["text"] == "ready\n"  # fmt: skip
    ztunnel = _query("ztunnel-node-1", "uid-z", 15020, "/metrics", namespace="istio-system")
    assert (await kubelet_get("node-1", sock, ztunnel))["status"] == 200
    assert pods.dialed == [("127.0.0.1", 15020), ("127.0.0.1", 15021), ("127.0.0.1", 15020)]


@pytest.mark.parametrize(
    ("name", "uid", "port", "path", "status", "words"),
    [
        ("web-1", "uid-a", 15020, "/metrics", 403, "not a mesh proxy"),  # an application
        ("waypoint-1", "uid-w", 15000, "/config_dump", 403, "port 15000"),  # admin: no
        ("waypoint-1", "uid-w", 15020, "/config_dump", 403, "path '/config_dump'"),
        ("waypoint-1", "uid-w", 8080, "/metrics", 403, "port 8080"),
        ("waypoint-1", "other", 15020, "/metrics", 404, "replaced?"),  # another pod's uid
        ("waypoint-1", "", 15020, "/metrics", 404, "replaced?"),  # no uid: no answer
        ("gone", "uid-g", 15020, "/metrics", 404, "does not run on node node-1"),
    ],
)
async def test_anything_but_a_mesh_pods_metrics_is_refused_before_connecting(
    node: tuple[_Pods, str], name: str, uid: str, port: int, path: str, status: int, words: str
) -> None:
    pods, sock = node
    with pytest.raises(KubeError) as refused:
        await kubelet_get("node-1", sock, _query(name, uid, port, path))
    assert refused.value.code == status and words in str(refused.value), refused.value
    assert pods.dialed == []


async def test_a_port_that_does_not_answer_is_a_clear_error(node: tuple[_Pods, str]) -> None:
    pods, sock = node
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    pods.ports[15020] = listener.getsockname()[1]
    listener.close()  # nothing listens there any more: the connection is refused
    with pytest.raises(KubeError) as refused:
        await kubelet_get("node-1", sock, _query("waypoint-1", "uid-w", 15020, "/metrics"))
    assert refused.value.code == 502
    assert "shop/waypoint-1:15020/metrics did not answer" in str(refused.value)
    with pytest.raises(KubeError) as bad:
        await kubelet_get("node-1", sock, "/podport?namespace=shop&name=waypoint-1&port=x")
    assert bad.value.code == 400 and "port: not an integer" in str(bad.value)
