"""``ControlPlane``: the current configuration and index, subscriptions, labels, and the CA.

Decisions:

- ``update`` is all or nothing: if the new index cannot be built (an address
  conflict), the error propagates and nothing changes.
- A subscription remembers the last snapshot it delivered and yields the diff
  to the current one when asked: its first ``Delta`` is the full state, later
  ones are incremental, and a slow reader gets one coalesced ``Delta`` instead
  of a backlog. Each change's ``Delta`` is computed once (by the incremental
  index, from what the change touched) and the same object is handed to every
  subscription one change behind; a reader further behind gets a diff limited
  to the names its missed changes touched (``changes_since``), and the full
  state is computed once per version (``full_state``). Every subscriber sees the whole mesh (as Istio's ztunnel
  does); ``node`` is recorded for later per-node scoping.
- Labels of a Deployment's pods (which are in no manifest) are kept here as
  per-pod overrides; they vanish with the pod (scale-down, or a template
  change, which renames pods as a rollout would). Other labels change the
  object in the configuration; a Namespace that was implicit becomes declared.
- Certificates are node-bound, as Istio enforces: a node may obtain one only
  for the identity of a pod scheduled on it.
- Objects outside the ambient index that waypoints enforce (RequestAuthentication,
  VirtualService, HTTPRoute, AuthorizationPolicy with ``targetRefs``...) travel in
  the ``Delta`` as ``l7_upserted``/``l7_removed`` (served over xDS as
  ``WaypointResource``). ``on_config`` callbacks get the whole new configuration
  after every change: the one-process mesh feeds its hosted waypoints from it.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from ambient.authz.peerauth import PeerAuthentication
from ambient.config.configset import ConfigSet, Origin, Ref
from ambient.config.frozen import FrozenMap
from ambient.config.resources import Resource
from ambient.controlplane.allocate import AddressAllocator
from ambient.controlplane.cluster import ClusterIndex
from ambient.controlplane.index import MeshIndex
from ambient.controlplane.labels import NotFound, check_label, kind_of, with_label
from ambient.controlplane.snapshot import EMPTY, Delta, MeshSnapshot, Touched, diff
from ambient.controlplane.source import NotAuthorized
from ambient.controlplane.workloads import DEFAULT_CLUSTER_ID, pod_uid
from ambient.identity.ca import CertificateAuthority
from ambient.identity.spiffe import SpiffeId
from ambient.state.workload import Workload

__all__ = ["ControlPlane", "Subscription"]

_Overrides = Mapping[tuple[str, str], Mapping[str, str | None]]
_LOG_LENGTH = 256  # changes remembered for subscriptions that fall behind


def _touched_by(delta: Delta) -> Touched:
    addresses = frozenset(
        (
            *(a.uid if isinstance(a, Workload) else a.key for a in delta.upserted),
            *delta.removed,
        )
    )
    authorizations = {p.key for p in delta.policies_upserted if not _is_peer(p)}
    peers = {p.key for p in delta.policies_upserted if _is_peer(p)}
    for kind, key in delta.policies_removed:
        (peers if kind == "PeerAuthentication" else authorizations).add(key)
    l7 = frozenset((*(name for name, _ in delta.l7_upserted), *delta.l7_removed))
    return Touched(addresses, addresses, frozenset(authorizations), frozenset(peers), l7)


def _is_peer(policy: object) -> bool:
    return isinstance(policy, PeerAuthentication)


class Subscription:
    """An async iterator of ``Delta``s from a ``ControlPlane``; see the module docstring."""

    def __init__(self, plane: ControlPlane, node: str | None) -> None:
        self._plane = plane
        self._node = node
        self._sent = EMPTY
        self._version = -1
        self._first = True
        self._closed = False
        self._wake = asyncio.Event()

    @property
    def node(self) -> str | None:
        """The node that subscribed (None for an observer such as the CLI)."""
        return self._node

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delta:
        while not self._closed:
            current = self._plane.snapshot
            if self._first or current is not self._sent:
                delta = (
                    self._plane.full_state()
                    if self._first
                    else self._plane.changes_since(self._version, self._sent)
                )
                self._sent, self._version = current, self._plane.version
                if self._first or delta:
                    self._first = False
                    return delta
            self._wake.clear()
            await self._wake.wait()
        raise StopAsyncIteration

    def notify(self) -> None:
        """Wake the reader: the snapshot changed."""
        self._wake.set()

    def close(self) -> None:
        """End the iteration (a pending ``__anext__`` raises StopAsyncIteration)."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._plane.unsubscribe(self)


class ControlPlane:
    """Holds the configuration and its ambient index; pushes changes; signs certificates."""

    def __init__(
        self,
        ca: CertificateAuthority,
        allocator: AddressAllocator | None = None,
        *,
        config: ConfigSet | None = None,
        cluster_id: str = DEFAULT_CLUSTER_ID,
        cluster: bool = False,
    ) -> None:
        """Index ``config``; addresses from ``allocator`` (default: in memory).

        Without ``config`` the index starts empty and the allocator is left
        untouched until the first ``update`` (so persisted addresses survive).
        ``cluster``: the objects are a Kubernetes cluster's, fed by ``apply_changes``
        (addresses are the API server's; see ``ambient.controlplane.cluster``).
        """
        self._ca = ca
        self._allocator = allocator or AddressAllocator()
        self._cluster_id = cluster_id
        index_type = ClusterIndex if cluster else MeshIndex
        self._index = index_type(
            self._allocator, trust_domain=ca.trust_domain, cluster_id=cluster_id
        )
        self._pod_labels: _Overrides = FrozenMap()
        self._subscriptions: list[Subscription] = []
        self._config_listeners: list[Callable[[ConfigSet], None]] = []
        self._ready: set[str] | None = None  # None: every pod is healthy (no health tracking)
        self._config = ConfigSet() if config is None else config
        self._snapshot = EMPTY
        self._version = 0
        self._log: deque[tuple[int, Touched, Delta]] = deque(maxlen=_LOG_LENGTH)
        self._full: tuple[int, Delta] | None = None
        if config is not None:
            self._snapshot, _ = self._index.update(config, self._pod_labels, None)

    @property
    def config(self) -> ConfigSet:
        """The configuration in force (including label changes)."""
        return self._config

    @property
    def snapshot(self) -> MeshSnapshot:
        """The current ambient index."""
        return self._snapshot

    @property
    def trust_domain(self) -> str:
        return self._ca.trust_domain

    @property
    def pod_labels(self) -> _Overrides:
        """Label overrides of Deployment pods: (namespace, pod) -> label -> value or None."""
        return self._pod_labels

    @property
    def version(self) -> int:
        """Counts the changes of the snapshot (each ``Delta`` pushed)."""
        return self._version

    def full_state(self) -> Delta:
        """``diff(EMPTY, snapshot)``, computed once per version and shared."""
        if self._full is None or self._full[0] != self._version:
            self._full = (self._version, diff(EMPTY, self._snapshot))
        return self._full[1]

    def changes_since(self, version: int, snapshot: MeshSnapshot) -> Delta:
        """What turns ``snapshot`` (the one of ``version``) into the current one."""
        if version == self._version:
            return diff(snapshot, self._snapshot, Touched())
        if self._log and self._log[-1][0] == self._version and version == self._version - 1:
            return self._log[-1][2]  # the common case: one change behind, shared
        missed = [touched for v, touched, _ in self._log if v > version]
        if len(missed) != self._version - version:
            return diff(snapshot, self._snapshot)  # too far behind for the log
        return diff(snapshot, self._snapshot, functools.reduce(operator.or_, missed))

    def track_health(self) -> Delta:
        """From now on a pod is a healthy endpoint only once :meth:`set_health` says so.

        As Kubernetes readiness does: the local runtime reports when a pod's
        containers run and its ports accept connections, and when they stop.
        """
        if self._ready is None:
            self._ready = set()
        return self._apply(self._config, self._pod_labels)

    def set_health(self, uid: str, healthy: bool) -> Delta:
        """Mark a pod (by workload uid) ready or not; returns what changed."""
        if self._ready is None:
            return self._apply(self._config, self._pod_labels)
        if healthy == (uid in self._ready):
            return Delta((), ())
        if healthy:
            self._ready.add(uid)
        else:
            self._ready.discard(uid)
        return self._apply(self._config, self._pod_labels)

    def _apply(
        self, config: ConfigSet, overrides: _Overrides, changed: Iterable[Ref] | None = None
    ) -> Delta:
        snapshot, delta = self._index.update(config, overrides, self._ready, changed=changed)
        if overrides:
            kept = {
                key: labels
                for key, labels in overrides.items()
                if pod_uid(key[0], key[1], self._cluster_id) in snapshot.workloads
            }
            overrides = overrides if len(kept) == len(overrides) else FrozenMap(kept)
        self._pod_labels = overrides
        new_config = config is not self._config
        self._config, self._snapshot = config, snapshot
        if new_config:
            for listener in self._config_listeners:
                listener(config)
        if delta:
            self._version += 1
            self._log.append((self._version, _touched_by(delta), delta))
            for subscription in self._subscriptions:
                subscription.notify()
        return delta

    def update(self, config: ConfigSet) -> Delta:
        """Index ``config``, make it current and notify subscribers; returns what changed."""
        return self._apply(config, self._pod_labels)

    def apply_changes(self, changes: Mapping[Ref, tuple[Resource, Origin | None] | None]) -> Delta:
        """Upsert objects (with where they come from) or, for None, delete them, as a
        cluster's watches report them; returns what changed. The index works from the
        refs given, so a change costs what it touches, not the size of the mesh."""
        objects = dict(self._config.objects)
        origins = dict(self._config.origins)
        for ref, entry in changes.items():
            if entry is None:
                objects.pop(ref, None)
                origins.pop(ref, None)
                continue
            objects[ref] = entry[0]
            if entry[1] is None:
                origins.pop(ref, None)
            else:
                origins[ref] = entry[1]
        config = ConfigSet(objects, origins, self._config.warnings)
        return self._apply(config, self._pod_labels, changes.keys())

    def label(self, kind: str, namespace: str, name: str, key: str, value: str | None) -> Delta:
        """Set (or with None, remove) a label, as ``ambient label``; returns what changed.

        Raises ``NotFound`` for an unknown object, ValueError for bad label syntax.
        """
        kind = kind_of(kind)
        ref = Ref(kind, namespace, name)
        if kind == "Pod" and ref not in self._config.objects:
            check_label(key, value)
            if pod_uid(namespace, name, self._cluster_id) not in self._snapshot.workloads:
                raise NotFound(f"{ref} not found")
            current = self._pod_labels.get((namespace, name), {})
            overrides = {**self._pod_labels, (namespace, name): FrozenMap({**current, key: value})}
            return self._apply(self._config, overrides)
        return self._apply(
            with_label(self._config, kind, namespace, name, key, value), self._pod_labels
        )

    def on_config(self, listener: Callable[[ConfigSet], None]) -> None:
        """Call ``listener(config)`` after each change of the configuration (see the docstring)."""
        self._config_listeners.append(listener)

    def subscribe(self, node: str | None = None) -> Subscription:
        """A new subscription; its first ``Delta`` upserts the whole current state."""
        subscription = Subscription(self, node)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop ``subscription`` (its iteration ends); unknown ones are ignored."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            subscription.close()

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    def close(self) -> None:
        """End every subscription."""
        for subscription in list(self._subscriptions):
            subscription.close()

    def authorize(self, node: str, identity: SpiffeId) -> None:
        """Raise ``NotAuthorized`` unless a pod with ``identity`` is scheduled on ``node``."""
        if any(w.local and w.identity == identity for w in self._snapshot.workloads_on(node)):
            return
        elsewhere = sorted(
            {
                w.node
                for w in self._snapshot.workloads.values()
                if w.local and w.identity == identity
            }
        )
        reason = f"it runs on {', '.join(elsewhere)}" if elsewhere else "no pod has that identity"
        raise NotAuthorized(
            f"node {node!r} may not obtain a certificate for {identity}: no pod with that "
            f"identity is scheduled on {node!r} ({reason})"
        )

    async def sign_certificate(
        self, node: str, identity: SpiffeId, csr_pem: bytes
    ) -> tuple[bytes, bytes]:
        """``(chain_pem, roots_pem)`` for ``identity``, after the node-bound check."""
        self.authorize(node, identity)
        return self._ca.sign_csr(csr_pem, identity), self._ca.roots_pem()
