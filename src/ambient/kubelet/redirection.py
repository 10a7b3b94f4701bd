"""The ``ambient.istio.io/redirection`` annotation of enrolled pods, as istio-cni writes it.

istio-cni annotates a pod ``ambient.istio.io/redirection: enabled`` once its node's
ztunnel serves it in the mesh, and removes the annotation when the pod leaves the
mesh. Here, per node: a pod is *expected* in the mesh when its namespace is labelled
``istio.io/dataplane-mode=ambient`` and the pod is not labelled
``istio.io/dataplane-mode=none`` (nor host-network, nor the ztunnel itself); it is
*served* when the node's ztunnel's ``/config_dump`` shows it as HBONE with its
listener open (``hbone`` without namespaces, ``redirected`` with ``--netns``). The
annotation follows what is served, never what is only expected.

When labels change (the namespace watch, the node's pod events), the ztunnel is read
until what it serves matches what is expected (the control plane needs a moment to
push the change), with back-off, for at most :data:`SETTLE` seconds; a read every
:data:`RESYNC` seconds catches anything else. Writes are JSON merge patches of the
annotation alone (``null`` removes it) with the pod's uid, through ``pods/status`` as
istio-cni writes them (and ``ambient node-agent``: ``nodeagent.annotation``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import NAMESPACE, POD, KindInfo
from ambient.kube.reflector import Reflector
from ambient.kubelet.podspec import KubePod

__all__ = [
    "ANNOTATION",
    "NamespaceLabels",
    "Redirection",
    "expected_in_mesh",
    "served_in_mesh",
]

log = logging.getLogger("ambient.kubelet")

ANNOTATION = "ambient.istio.io/redirection"
MODE_LABEL = "istio.io/dataplane-mode"
SETTLE = 30.0
WRITES_AT_ONCE = 16
RESYNC = 30.0


def expected_in_mesh(pod: KubePod, namespace_labels: Mapping[str, str]) -> bool:
    """Whether the labels put ``pod`` in the mesh (istio-cni's decision)."""
    if pod.host_network or pod.labels.get(MODE_LABEL) == "none":
        return False
    if pod.labels.get(MODE_LABEL) == "ambient":
        return True
    return namespace_labels.get(MODE_LABEL) == "ambient"


def served_in_mesh(dump: Mapping[str, Any]) -> dict[tuple[str, str], bool]:
    """For each workload of a ztunnel's ``/config_dump``: whether it serves it in the mesh."""
    listeners = dump.get("listeners") or {}
    served: dict[tuple[str, str], bool] = {}
    for workload in dump.get("workloads") or []:
        key = (str(workload.get("namespace")), str(workload.get("name")))
        mine = listeners.get(workload.get("uid"))
        if not isinstance(mine, Mapping):
            continue
        hbone = workload.get("protocol") == "HBONE"
        served[key] = hbone and bool(mine.get("hbone") or mine.get("redirected"))
    return served


class NamespaceLabels:
    """Every namespace's labels, kept by a watch (a ``Reflector`` sink)."""

    def __init__(self, client: KubeClient) -> None:
        self.labels: dict[str, dict[str, str]] = {}
        self.listeners: list[Callable[[], None]] = []
        self._reflector = Reflector(client, NAMESPACE, self)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._reflector.run())
        await self._reflector.synced.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def replace(self, _info: KindInfo, items: list[dict[str, Any]]) -> None:
        self.labels = {
            i["metadata"]["name"]: dict(i["metadata"].get("labels") or {}) for i in items
        }
        self._changed()

    def event(self, _info: KindInfo, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        labels = dict(meta.get("labels") or {})
        if kind == "DELETED":
            self.labels.pop(name, None)
        elif self.labels.get(name) != labels:
            self.labels[name] = labels
        else:
            return
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()


class Redirection:
    """Keeps one node's pods' annotation in step with its ztunnel (see the module)."""

    def __init__(
        self,
        client: KubeClient,
        node: str,
        pods: Callable[[], Mapping[tuple[str, str], KubePod]],
        namespaces: NamespaceLabels,
        config_dump: Callable[[], Awaitable[Mapping[str, Any] | None]],
        *,
        skip: Callable[[KubePod], bool] = lambda _pod: False,
    ) -> None:
        self.client = client
        self.node = node
        self.pods = pods
        self.namespaces = namespaces
        self.config_dump = config_dump
        self.skip = skip
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        namespaces.listeners.append(self.poke)

    def poke(self) -> None:
        """Labels or pods changed: read the ztunnel until it agrees."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self.poke in self.namespaces.listeners:
            self.namespaces.listeners.remove(self.poke)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(RESYNC):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETTLE
            delay = 0.05
            while True:
                try:
                    settled = await self.sync_once()
                except Exception:
                    log.exception("node %s: redirection annotations", self.node)
                    settled = False
                if settled or loop.time() > deadline or self._wake.is_set():
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def sync_once(self) -> bool:
        """Annotate as the ztunnel serves; True if that is also what the labels expect."""
        dump = await self.config_dump()
        if dump is None:
            return False
        served = served_in_mesh(dump)
        settled = True
        writes = []
        for key, pod in list(self.pods().items()):
            if self.skip(pod) or not pod.pod_ip:
                continue
            labels = self.namespaces.labels.get(pod.namespace, {})
            expected = expected_in_mesh(pod, labels)
            now = served.get(key, False)
            if now != expected:
                settled = False
            annotated = pod.annotations.get(ANNOTATION) == "enabled"
            if now != annotated:
                writes.append(self._annotate(pod, now))
        for batch in range(0, len(writes), WRITES_AT_ONCE):
            await asyncio.gather(*writes[batch : batch + WRITES_AT_ONCE])
        return settled

    async def _annotate(self, pod: KubePod, enabled: bool) -> None:
        meta: dict[str, Any] = {"annotations": {ANNOTATION: "enabled" if enabled else None}}
        if pod.uid:
            meta["uid"] = pod.uid  # a pod re-made under the same name is refused (409)
        try:
            await self.client.patch(POD.path(pod.namespace, pod.name, "status"), {"metadata": meta})
        except KubeError as err:
            if err.code not in (404, 409):
                log.warning(
                    "pod %s/%s: %s not written: %s", pod.namespace, pod.name, ANNOTATION, err
                )
            return
        log.info(
            "pod %s/%s: %s %s",
            pod.namespace,
            pod.name,
            ANNOTATION,
            "enabled" if enabled else "removed",
        )
