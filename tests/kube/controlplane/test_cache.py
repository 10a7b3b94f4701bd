"""The controller's informer caches, in process: what the CA will ask (``PodLookup``),
Nodes and ServiceAccounts (which feed no ztunnel), and the change detection that keeps
status writes and kubelet heartbeats from reaching the index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ambient.controlplane import ControlPlane
from ambient.identity.ca import CertificateAuthority
from ambient.kube.api import KubeClient
from ambient.kube.controller import KubeController
from ambient.kube.kinds import POD, by_kind
from tests.kube.controlplane.test_watch import create, pod
from tests.kube.kubelet import KubeletStandIn

pytestmark = [pytest.mark.slow, pytest.mark.kube]


@pytest.fixture
async def controller(admin: KubeClient) -> AsyncIterator[KubeController]:
    plane = ControlPlane(CertificateAuthority.generate(), cluster=True)
    running = KubeController(admin, plane)
    running.start()
    await running.wait_synced(30)
    yield running
    await running.close()


async def changed(controller: KubeController, check: Any, timeout: float = 20.0) -> Any:
    """Until ``check()`` is truthy, re-checked after each batch the controller applies."""
    async with asyncio.timeout(timeout):
        while True:
            controller.batch_done.clear()
            if result := check():
                return result
            await controller.batch_done.wait()


async def test_pod_lookup_for_the_ca(
    controller: KubeController, admin: KubeClient, kubelet: KubeletStandIn, namespace: str
) -> None:
    await kubelet.register("node-a", "192.168.60.1")
    await kubelet.register("node-b", "192.168.60.2")
    await create(
        admin,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "reader", "namespace": namespace},
        },
    )
    await create(admin, pod(namespace, "r1", {"app": "r"}, node="node-a", sa="reader"))
    await create(admin, pod(namespace, "r2", {"app": "r"}, node="node-b", sa="reader"))
    cache = controller.cache
    # Pods without an IP are no workloads, but the CA knows where they run.
    await kubelet.run(namespace, "r1", "10.244.60.1")
    await changed(
        controller,
        lambda: controller.plane.snapshot.workloads.get(f"Kubernetes//Pod/{namespace}/r1"),
    )
    found = cache.pod(namespace, "r2")
    assert found is not None and found.node == "node-b" and found.ips == ()
    assert [p.name for p in cache.pods_of(namespace, "reader", "node-a")] == ["r1"]
    assert [p.name for p in cache.pods_of(namespace, "reader", "node-b")] == ["r2"]
    assert cache.pods_of(namespace, "default", "node-a") == ()
    assert cache.get("ServiceAccount", namespace, "reader") is not None
    assert cache.get("Node", "", "node-a") is not None
    uid = (await admin.get(POD.path(namespace, "r1")))["metadata"]["uid"]
    assert cache.pod(namespace, "r1").uid == uid  # type: ignore[union-attr]

    await kubelet.delete(namespace, "r2")
    await admin.delete(by_kind("ServiceAccount").path(namespace, "reader"))
    await changed(
        controller,
        lambda: (
            cache.pod(namespace, "r2") is None
            and cache.get("ServiceAccount", namespace, "reader") is None
        ),
    )
    assert cache.pods_of(namespace, "reader", "node-b") == ()


async def test_status_churn_does_not_reach_the_index(
    controller: KubeController, admin: KubeClient, kubelet: KubeletStandIn, namespace: str
) -> None:
    """A kubelet rewriting a pod's status with nothing the mesh reads changing (its
    heartbeat of conditions) moves the pod's resourceVersion, not the index."""
    await kubelet.register("node-a", "192.168.60.1")
    await create(admin, pod(namespace, "quiet", {"app": "q"}, node="node-a"))
    await kubelet.run(namespace, "quiet", "10.244.60.9")
    uid = f"Kubernetes//Pod/{namespace}/quiet"
    await changed(controller, lambda: controller.plane.snapshot.workloads.get(uid))
    version = controller.plane.version
    events = next(r for r in controller.reflectors if r.info.kind == "Pod").state.events
    for restarts in range(1, 6):
        await kubelet.set_status(
            namespace, "quiet", "10.244.60.9", ready=True, host="192.168.60.1", restarts=restarts
        )
    # Then one change that matters, to know the five were processed before it.
    await admin.patch(POD.path(namespace, "quiet"), {"metadata": {"labels": {"app": "q2"}}})
    await changed(
        controller, lambda: controller.plane.snapshot.workloads[uid].labels.get("app") == "q2"
    )
    assert next(r for r in controller.reflectors if r.info.kind == "Pod").state.events >= events + 6
    assert controller.plane.version == version + 1
