"""``KubeController``: the control plane as a controller of a Kubernetes cluster.

One ``Reflector`` per watched kind (``kinds.WATCHED``, plus the waypoint Deployments
it manages) delivers into the informer caches (``ClusterCache``); each object whose
view changed becomes a pending change, and a batch loop hands the pending changes
to the ``ControlPlane`` at once (``apply_changes``), the same index, xDS server and
CA as the folder mode. Decisions:

- Nothing reaches the index before every kind has been listed once: the first batch
  is the whole cluster (one build), and the xDS and certificate servers start after
  it (``wait_synced``), as istiod waits for its informers. A ztunnel never sees a
  half-listed mesh.
- A batch is taken ``debounce`` (10 ms) after the first change that wakes the loop,
  so a burst (a Deployment's pods, a relist) is one index update, and a single
  change reaches the ztunnels within milliseconds. Istio debounces 100 ms; the
  incremental index makes a shorter window cheap.
- After each batch: waypoint Gateways that changed get their Deployment, Service and
  ServiceAccount applied (``kube.waypoints``), statuses that changed are written
  (``kube.status``; compared with the observed status first), both through the
  ``Writer``. An owned object deleted by someone else is applied again.
- An invalid object is logged once per version (kind, namespace, name, field and
  problem) and kept out of the index, or replaced by its fail-closed stand-in (see
  ``kube.convert``); the others flow on. ``status()`` lists them, as ``ambient
  analyze`` does from the cluster.
- One replica: there is no leader election. Two controllers of one cluster would
  both write status and waypoint objects (to the same values); the heartbeat Lease
  (``kube.heartbeat``) names the last writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from ambient.config.configset import Origin, Ref
from ambient.config.l7objects import L7_KINDS
from ambient.config.resources import Pod
from ambient.controlplane.cluster import is_workload_pod
from ambient.controlplane.plane import ControlPlane
from ambient.kube.api import KubeClient
from ambient.kube.cache import ClusterCache, Entry
from ambient.kube.convert import describe
from ambient.kube.kinds import DEPLOYMENT, GATEWAY, ROUTE_KINDS, WATCHED, KindInfo, by_kind
from ambient.kube.reflector import Reflector
from ambient.kube.status import attached_routes, covers, gateway_status, route_status
from ambient.kube.waypoints import (
    LABEL_GATEWAY_NAME,
    LABEL_MANAGED,
    MANAGED_VALUE,
    WAYPOINT_IMAGE,
    waypoint_objects,
)
from ambient.kube.writer import Writer

__all__ = ["KubeController"]

log = logging.getLogger("ambient.kube")

CLUSTER_ORIGIN = "<cluster>"
_ROUTE_INPUTS = frozenset({"Service", "ServiceEntry", "Namespace", "Gateway", *ROUTE_KINDS})
_OWNED_KINDS = frozenset({"Deployment", "Service", "ServiceAccount"})


class KubeController:
    """Feeds ``plane`` from the cluster behind ``client`` (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        plane: ControlPlane,
        *,
        watched: Iterable[KindInfo] = WATCHED,
        debounce: float = 0.01,
        waypoint_image: str = WAYPOINT_IMAGE,
    ) -> None:
        self.client = client
        self.plane = plane
        watched = tuple(watched)
        self.cache = ClusterCache(indexed=frozenset(i.kind for i in watched))
        self.writer = Writer(client)
        self.debounce = debounce
        self.waypoint_image = waypoint_image
        self.reflectors = [Reflector(client, info, self) for info in watched]
        self.reflectors.append(
            Reflector(client, DEPLOYMENT, self, label_selector=f"{LABEL_MANAGED}={MANAGED_VALUE}")
        )
        self.batches = 0
        self.synced = asyncio.Event()
        self.status_changed = asyncio.Event()  # the heartbeat writes at once when set
        self.batch_done = asyncio.Event()  # set after each batch (tests wait on it)
        self.started = time.time()
        self._pending: dict[Ref, Entry | None] = {}
        self._wake = asyncio.Event()
        self._gateways: set[tuple[str, str]] = set()  # their status may have changed
        self._deploy: set[tuple[str, str]] = set()  # their waypoint objects may have changed
        self._routes = False  # every route's status may have changed
        self._applied: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._waypoint_pods: dict[tuple[str, str], dict[str, bool]] = {}
        self._pod_gateway: dict[tuple[str, str], str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watches, the batch loop and the writer (``wait_synced`` for readiness)."""
        for reflector in self.reflectors:
            self._tasks.append(asyncio.ensure_future(reflector.run()))
        self._tasks.append(asyncio.ensure_future(self._batches()))
        self._tasks.append(asyncio.ensure_future(self.writer.run()))

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until every kind was listed and the first batch is in the index."""
        async with asyncio.timeout(timeout):
            await self.synced.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    @property
    def ready(self) -> bool:
        return self.synced.is_set()

    def unsynced(self) -> list[Reflector]:
        return [r for r in self.reflectors if not r.synced.is_set()]

    async def _batches(self) -> None:
        for reflector in self.reflectors:
            await reflector.synced.wait()
        self._flush()
        self.synced.set()
        self.status_changed.set()
        log.info(
            "watching %d kinds: %d workloads, %d services in the index",
            len(self.reflectors),
            len(self.plane.snapshot.workloads),
            len(self.plane.snapshot.services),
        )
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            try:
                self._flush()
            except Exception:  # one bad batch must not stop the controller
                log.exception("applying a batch of changes failed")
            self.batch_done.set()

    # -- the reflectors' sink ------------------------------------------------------------

    def replace(self, info: KindInfo, items: list[dict[str, Any]]) -> None:
        seen = set()
        for raw in items:
            seen.add(self._upsert(info, raw))
        for namespace, name in self.cache.keys(info.kind) - seen:
            self._remove(info, namespace, name)

    def event(self, info: KindInfo, kind: str, obj: dict[str, Any]) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self._upsert(info, obj)
        elif kind == "DELETED":
            meta = obj.get("metadata") or {}
            namespace = meta.get("namespace", "") if info.namespaced else ""
            self._remove(info, namespace, meta.get("name", ""))

    def _upsert(self, info: KindInfo, raw: dict[str, Any]) -> tuple[str, str]:
        entry, changed = self.cache.upsert(info, raw)
        key = (entry.namespace, entry.name)
        if changed:
            if entry.converted is not None:
                self._report(entry)
                self._pending[entry.ref] = entry
            self._note(info.kind, entry)
            self._wake.set()
        elif info.kind in ("Gateway", *ROUTE_KINDS):
            self._note_status(info.kind, entry)  # someone (maybe us) wrote its status
            self._wake.set()
        return key

    def _remove(self, info: KindInfo, namespace: str, name: str) -> None:
        entry = self.cache.remove(info.kind, namespace, name)
        if entry is None:
            return
        if entry.converted is not None:
            self._pending[entry.ref] = None
            if entry.invalid:
                log.info("%s %s/%s deleted (it was invalid)", info.kind, namespace, name)
        self._note(info.kind, entry, removed=True)
        self._wake.set()

    def _report(self, entry: Entry) -> None:
        converted = entry.converted
        assert converted is not None
        kind, ns, name = entry.info.kind, entry.namespace, entry.name
        for issue in converted.errors:
            log.warning("invalid %s", describe(kind, ns, name, issue))
        if converted.errors:
            if converted.standin is not None:
                log.warning(
                    "%s %s/%s is enforced as %s until fixed (fail closed)",
                    kind,
                    ns,
                    name,
                    _standin_words(converted.standin),
                )
            else:
                log.warning("%s %s/%s is ignored until fixed", kind, ns, name)
        for issue in converted.warnings:
            log.info("%s", describe(kind, ns, name, issue))

    def _note(self, kind: str, entry: Entry, *, removed: bool = False) -> None:
        """Mark what this object's change may affect: statuses, waypoint objects."""
        key = (entry.namespace, entry.name)
        if kind in _ROUTE_INPUTS:
            self._routes = True
        if kind == "Gateway":
            self._gateways.add(key)
            self._deploy.add(key)
            if removed:
                self._applied.pop(key, None)
        elif kind == "Service":
            self._gateways.add(key)
        elif kind == "Pod":
            self._note_pod(key, entry, removed)
        if removed and kind in _OWNED_KINDS:
            self._repair(entry)

    def _note_pod(self, key: tuple[str, str], entry: Entry, removed: bool) -> None:
        labels = (entry.view.get("metadata") or {}).get("labels") or {}
        gateway = None if removed else labels.get(LABEL_GATEWAY_NAME)
        before = self._pod_gateway.pop(key, None)
        if before is not None and before != gateway:
            pods = self._waypoint_pods.get((key[0], before), {})
            pods.pop(key[1], None)
            self._gateways.add((key[0], before))
        if gateway is None:
            return
        obj = entry.converted.obj if entry.converted else None
        ready = isinstance(obj, Pod) and is_workload_pod(obj) and obj.status.ready is True
        self._pod_gateway[key] = gateway
        pods = self._waypoint_pods.setdefault((key[0], gateway), {})
        if pods.get(key[1]) != ready:
            pods[key[1]] = ready
            self._gateways.add((key[0], gateway))

    def _note_status(self, kind: str, entry: Entry) -> None:
        if kind == "Gateway":
            self._gateways.add((entry.namespace, entry.name))
        else:
            self._routes = True

    def _repair(self, entry: Entry) -> None:
        """An object owned by a waypoint Gateway was deleted: apply its Gateway's again."""
        for owner in entry.owners:
            if owner.get("kind") != "Gateway":
                continue
            gateway = self.cache.get("Gateway", entry.namespace, str(owner.get("name")))
            if gateway is not None and gateway.uid == owner.get("uid"):
                self._applied.pop((gateway.namespace, gateway.name), None)
                self._deploy.add((gateway.namespace, gateway.name))

    # -- a batch ----------------------------------------------------------------------

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        changes: dict[Ref, Any] = {}
        present = self.plane.config.objects
        for ref, entry in pending.items():
            converted = entry.converted if entry is not None else None
            if entry is None or converted is None or converted.obj is None:
                if ref in present:
                    changes[ref] = None
                continue
            source = converted.standin or entry.view
            origin = Origin(CLUSTER_ORIGIN, 0, source=source if ref.kind in L7_KINDS else None)
            changes[ref] = (converted.obj, origin)
        if changes:
            self.plane.apply_changes(changes)
            self.batches += 1
        self._deploy_waypoints()
        self._write_statuses()

    def _deploy_waypoints(self) -> None:
        deploy, self._deploy = self._deploy, set()
        for namespace, name in sorted(deploy):
            entry = self.cache.get("Gateway", namespace, name)
            obj = entry.converted.obj if entry and entry.converted else None
            if entry is None or obj is None or entry.invalid:
                continue
            objects = waypoint_objects(obj, entry.uid, self.waypoint_image)  # type: ignore[arg-type]
            if not objects or self._applied.get((namespace, name)) == objects:
                continue
            self._applied[(namespace, name)] = objects
            for body in objects:
                info = by_kind(str(body["kind"]))
                path = info.path(namespace, name)
                self.writer.apply(f"{info.kind}/{namespace}/{name}", path, body)

    def _write_statuses(self) -> None:
        gateways, self._gateways = self._gateways, set()
        routes, self._routes = self._routes, False
        if routes:
            gateways.update((e.namespace, e.name) for e in self.cache.entries("Gateway"))
        attached = attached_routes(self.cache, ROUTE_KINDS) if gateways else {}
        for namespace, name in sorted(gateways):
            entry = self.cache.get("Gateway", namespace, name)
            if entry is None:
                continue
            ready = sum(self._waypoint_pods.get((namespace, name), {}).values())
            service = self.cache.get("Service", namespace, name)
            status = gateway_status(entry, service, ready, attached.get((namespace, name), {}))
            self._write_status(GATEWAY, entry, status)
        if routes:
            for kind in ROUTE_KINDS:
                for entry in list(self.cache.entries(kind)):
                    self._write_status(by_kind(kind), entry, route_status(entry, self.cache))

    def _write_status(self, info: KindInfo, entry: Entry, status: dict[str, Any] | None) -> None:
        if status is None or covers(entry.status, status):
            return
        key = f"{info.kind}/{entry.namespace}/{entry.name}/status"
        waiting = self.writer.pending(key)
        if waiting is not None and covers(waiting.get("status"), status):
            return
        body = {
            "apiVersion": info.api_version,
            "kind": info.kind,
            "metadata": {"name": entry.name, "namespace": entry.namespace},
            "status": status,
        }
        self.writer.apply(key, info.path(entry.namespace, entry.name, "status"), body)

    # -- what ``ambient status`` shows ----------------------------------------------------

    def status(self, limit: int = 50) -> dict[str, Any]:
        """Readiness, every watch's state, the invalid objects (at most ``limit``)."""
        invalid = []
        for entry in self.cache.invalid():
            assert entry.converted is not None
            invalid.append(
                {
                    "kind": entry.info.kind,
                    "namespace": entry.namespace,
                    "name": entry.name,
                    "problems": [
                        describe(entry.info.kind, entry.namespace, entry.name, issue)
                        for issue in entry.converted.errors
                    ],
                    "standin": entry.converted.standin is not None,
                }
            )
        snapshot = self.plane.snapshot
        return {
            "ready": self.ready,
            "server": self.client.server,
            "watches": [r.state.to_dict(self.cache.count(r.info.kind)) for r in self.reflectors],
            "invalid": invalid[:limit],
            "invalidCount": len(invalid),
            "workloads": len(snapshot.workloads),
            "services": len(snapshot.services),
            "version": self.plane.version,
            "subscribers": len(self.plane.subscriptions),
            "batches": self.batches,
            "statusWrites": self.writer.writes,
        }


def _standin_words(standin: dict[str, Any]) -> str:
    spec = standin.get("spec") or {}
    scope = (
        "its selector"
        if "selector" in spec
        else "its targets"
        if "targetRefs" in spec or "targetRef" in spec
        else "its namespace"
    )
    if standin.get("kind") == "PeerAuthentication":
        return f"STRICT mTLS for {scope}"
    if spec.get("action") == "ALLOW":
        return f"an ALLOW policy allowing nothing for {scope}"
    return f"a DENY of everything for {scope}"
