"""A kubelet stand-in for part 1 (part 2 brings the project's real kubelet).

The dev cluster has no kubelet: nothing registers Nodes, runs pods or reports their
IP and readiness. Tests need that much of a kubelet to see pods become workloads, so
``KubeletStandIn`` does it through the API server, as kwok's node and pod
controllers do (with the admin credentials, as a kubelet would with its own):

- ``register(node)``: a Node with ``Ready=True``, capacity, an InternalIP, and a Lease
  in ``kube-node-lease`` renewed every 10 s while ``heartbeats()`` runs, so the node
  lifecycle controller keeps it Ready and the pod garbage collector keeps its pods
  (pods bound to a Node that does not exist are deleted after ~40 s).
- ``run(pod)``: write the pod's status through ``/status`` (phase Running, podIP,
  hostIP, the Ready condition), binding it first (``/binding``) if the scheduler has
  not (``nodeName`` given explicitly).
- ``delete(pod)``: what a kubelet does to a pod with a deletionTimestamp: delete it
  for good (grace period 0).

It runs no process: the control plane under test only reads what a kubelet writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import NODE, POD, KindInfo

LEASE = KindInfo("Lease", "coordination.k8s.io", "v1", "leases")


def _now(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.now(UTC).strftime(fmt)


class KubeletStandIn:
    """The part of a kubelet the control plane's tests need (see the module docstring)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.nodes: dict[str, str] = {}  # name -> InternalIP
        self._heartbeat: asyncio.Task[None] | None = None

    async def register(self, node: str, ip: str) -> None:
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet stand-in",
                    "lastHeartbeatTime": _now(),
                    "lastTransitionTime": _now(),
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": node},
            ],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": node},
            },
        }
        await self.client.apply(NODE.path(None, node), body)
        await self.client.apply(NODE.path(None, node, "status"), {**body, "status": status})
        self.nodes[node] = ip
        await self._renew(node)

    async def _renew(self, node: str) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": 40,
                "renewTime": _now(micro=True),
            },
        }
        await self.client.apply(LEASE.path("kube-node-lease", node), body)

    def heartbeats(self) -> None:
        """Renew every registered node's Lease every 10 s (until ``close``)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(10)
                for node in list(self.nodes):
                    # The API server may be restarting: the next round renews.
                    with contextlib.suppress(KubeError):
                        await self._renew(node)

        self._heartbeat = asyncio.ensure_future(loop())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)

    async def run(
        self, namespace: str, name: str, ip: str, *, ready: bool = True, node: str | None = None
    ) -> dict[str, Any]:
        """Report pod ``namespace/name`` running at ``ip`` (bound to ``node`` if unbound)."""
        pod = await self.client.get(POD.path(namespace, name))
        bound = (pod.get("spec") or {}).get("nodeName")
        if not bound:
            if node is None:
                raise ValueError(f"pod {namespace}/{name} is not bound: name a node")
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            try:
                await self.client.create(POD.path(namespace, name, "binding"), binding)
                bound = node
            except KubeError as err:  # the scheduler was quicker
                if err.code != 409:
                    raise
                bound = (await self.client.get(POD.path(namespace, name)))["spec"]["nodeName"]
        return await self.set_status(
            namespace, name, ip, ready=ready, host=self.nodes.get(bound, "")
        )

    async def set_status(
        self,
        namespace: str,
        name: str,
        ip: str,
        *,
        ready: bool,
        host: str = "",
        restarts: int = 0,
    ) -> dict[str, Any]:
        status: dict[str, Any] = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": _now(),
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": _now()},
                {
                    "type": "ContainersReady",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": _now(),
                },
            ],
        }
        if restarts:
            status["containerStatuses"] = [
                {
                    "name": "app",
                    "image": "app",
                    "imageID": "",
                    "ready": ready,
                    "restartCount": restarts,
                    "started": True,
                    "state": {"running": {"startedAt": _now()}},
                }
            ]
        if host:
            status["hostIP"] = host
            status["hostIPs"] = [{"ip": host}]
        patch = {"status": status}
        path = POD.path(namespace, name, "status")
        answer: dict[str, Any] = await self.client.patch(
            path, patch, "application/strategic-merge-patch+json"
        )
        return answer

    async def delete(self, namespace: str, name: str) -> None:
        """Remove a pod for good, as a kubelet does once its containers stopped."""
        try:
            await self.client.delete(
                POD.path(namespace, name),
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
            )
        except KubeError as err:
            if err.code != 404:
                raise


async def watch_until(
    client: KubeClient,
    info: KindInfo,
    namespace: str | None,
    name: str,
    check: Any,
    timeout: float = 30.0,
    what: str = "",
) -> Any:
    """Watch one object until ``check(obj or None)`` returns something truthy; returns it."""

    def one(objects: dict[str, dict[str, Any]]) -> Any:
        return check(objects.get(name))

    return await watch_objects(
        client,
        info,
        namespace,
        one,
        f"metadata.name={name}",
        timeout=timeout,
        what=what or f"{info.kind} {name}",
    )


async def watch_objects(
    client: KubeClient,
    info: KindInfo,
    namespace: str | None,
    check: Any,
    field_selector: str = "",
    *,
    label_selector: str = "",
    timeout: float = 30.0,
    what: str = "",
) -> Any:
    """Watch the objects a selector picks until ``check({name: obj})`` is truthy.

    The API server's own events are the signal (no polling): a list for the current
    state, then a watch from its resourceVersion, bounded by ``timeout``.
    """
    params = {}
    if field_selector:
        params["fieldSelector"] = field_selector
    if label_selector:
        params["labelSelector"] = label_selector
    path = info.path(namespace)
    objects: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                items, version = await client.list(path, params)
                objects = {i["metadata"]["name"]: i for i in items}
                if done := check(objects):
                    return done
                query = {
                    **params,
                    "resourceVersion": version,
                    "timeoutSeconds": str(int(timeout) + 5),
                }
                async for event in client.watch(path, query, read_timeout=timeout + 10):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        objects.pop(obj["metadata"]["name"], None)
                    else:
                        objects[obj["metadata"]["name"]] = obj
                    if done := check(objects):
                        return done
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout:g}s waiting for {what or info.kind}; last seen: {objects!r}"[
                :4000
            ]
        ) from None
