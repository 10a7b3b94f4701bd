"""The mesh as xDS resources, encoded once and shared by every stream of ``XdsServer``.

``MeshView`` holds the resources (name -> ``Resource``) of each type and takes in
``Delta``s; ``Published`` keeps one view for all streams, a revision counter and a
log of the names each change touched; ``EncodeCache`` makes each snapshot object
encoded once. Versions are content hashes (``resource_version``). How workloads list
their policies (Istio's way) is ``ambient.xds.policies``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from ambient.authz.model import Authorization, labels_key
from ambient.authz.peerauth import PeerAuthentication
from ambient.authz.store import PolicyStore
from ambient.controlplane.plane import ControlPlane
from ambient.controlplane.snapshot import EMPTY, Delta
from ambient.state.workload import Service, Workload
from ambient.xds.codec import (
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    WAYPOINT_TYPE_URL,
    authorization_to_proto,
    service_to_proto,
    waypoint_resource_to_proto,
    workload_to_proto,
)
from ambient.xds.policies import peer_authentication_to_authorizations, workload_policy_keys
from ambient.xds.proto import discovery_pb2

__all__ = ["TYPE_URLS", "EncodeCache", "MeshView", "Published", "resource_version"]

log = logging.getLogger("ambient.xds")

TYPE_URLS = (ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_TYPE_URL)
_LOG_LENGTH = 1024  # changes a stream may fall behind before it is asked to reconnect


def resource_version(packed: any_pb2.Any) -> str:
    """The version of a resource: a hash of its type and deterministic encoding."""
    digest = hashlib.blake2b(packed.type_url.encode(), digest_size=8)
    digest.update(packed.value)
    return digest.hexdigest()


def _workload_listing(keys: tuple[str, ...], workload: Workload) -> Message:
    """The workload's proto, listing the policies that apply to it (Istio's way)."""
    return workload_to_proto(dataclasses.replace(workload, authorization_policies=keys))


class EncodeCache:
    """Encoded resources shared by every stream: each snapshot object is encoded once.

    Keyed by the identity of the (immutable) object the control plane pushed, plus
    what a stream adds to it (the policy names a workload lists); the object is
    kept with the entry so its identity cannot be reused while cached. Bounded:
    cleared when it grows past ``limit`` entries.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._entries: dict[tuple[int, object], tuple[object, discovery_pb2.Resource | None]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, source: object, extra: object) -> tuple[bool, discovery_pb2.Resource | None]:
        entry = self._entries.get((id(source), extra))
        if entry is not None and entry[0] is source:
            self.hits += 1
            return True, entry[1]
        self.misses += 1
        return False, None

    def put(self, source: object, extra: object, resource: discovery_pb2.Resource | None) -> None:
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[(id(source), extra)] = (source, resource)


class MeshView:
    """One stream's copy of the mesh, encoded as xDS resources (name -> Resource)."""

    def __init__(self, node: str, root_namespace: str, cache: EncodeCache | None = None) -> None:
        self._cache = cache or EncodeCache()
        self._node = node
        self._root = root_namespace
        self._workloads: dict[str, Workload] = {}
        self._policies: dict[str, Authorization] = {}
        self._peers: dict[str, PeerAuthentication] = {}
        self._synthetic: dict[str, Authorization] = {}
        self._store = PolicyStore(root_namespace)
        self._sources: dict[str, dict[str, object]] = {t: {} for t in TYPE_URLS}
        self.resources: dict[str, dict[str, discovery_pb2.Resource]] = {t: {} for t in TYPE_URLS}

    def apply(self, delta: Delta) -> dict[str, set[str]]:
        """Take in one ``Delta``; returns the names whose resource may have changed, by type."""
        dirty: dict[str, set[str]] = {t: set() for t in TYPE_URLS}
        for name in delta.l7_removed:
            self._drop(WAYPOINT_TYPE_URL, name, dirty)
        for name, manifest in delta.l7_upserted:
            self._put(WAYPOINT_TYPE_URL, name, manifest, waypoint_resource_to_proto, dirty)
        for name in delta.removed:
            self._workloads.pop(name, None)
            self._drop(ADDRESS_TYPE_URL, name, dirty)
        peers_changed = False
        for kind, key in delta.policies_removed:
            namespace, _, name = key.partition("/")
            if kind == "AuthorizationPolicy":
                self._store.remove_authorization(namespace, name)
                self._policies.pop(key, None)
            else:
                self._store.remove_peer_authentication(namespace, name)
                self._peers.pop(key, None)
                peers_changed = True
        for policy in delta.policies_upserted:
            if isinstance(policy, Authorization):
                self._store.put_authorization(policy)
                self._policies[policy.key] = policy
            else:
                self._store.put_peer_authentication(policy)
                self._peers[policy.key] = policy
                peers_changed = True
        if peers_changed:
            synthetic = peer_authentication_to_authorizations(self._peers.values(), self._root)
            self._synthetic = {a.key: a for a in synthetic}
        policies_changed = bool(delta.policies_upserted or delta.policies_removed)
        if policies_changed:
            self._encode_policies(dirty)
        for address in delta.upserted:
            if isinstance(address, Workload):
                self._workloads[address.uid] = address
        changed: Iterable[Workload | Service] = delta.upserted
        if policies_changed:  # what each workload lists may have changed
            changed = [
                *(a for a in delta.upserted if isinstance(a, Service)),
                *self._workloads.values(),
            ]
        self._encode_addresses(changed, dirty)
        return dirty

    def _encode_policies(self, dirty: dict[str, set[str]]) -> None:
        wanted = {**self._synthetic, **self._policies}  # a real policy wins a name clash
        for name in [n for n in self.resources[AUTHORIZATION_TYPE_URL] if n not in wanted]:
            self._drop(AUTHORIZATION_TYPE_URL, name, dirty)
        for name, policy in wanted.items():
            self._put(AUTHORIZATION_TYPE_URL, name, policy, authorization_to_proto, dirty)

    def _encode_addresses(
        self, addresses: Iterable[Workload | Service], dirty: dict[str, set[str]]
    ) -> None:
        listed: dict[tuple[str, object], tuple[str, ...]] = {}
        for address in addresses:
            if isinstance(address, Service):
                self._put(ADDRESS_TYPE_URL, address.key, address, service_to_proto, dirty)
                continue
            group = (address.namespace, labels_key(address.labels))
            keys = listed.get(group)
            if keys is None:
                keys = listed[group] = workload_policy_keys(
                    self._store, address.namespace, address.labels
                )
            self._put(
                ADDRESS_TYPE_URL,
                address.uid,
                address,
                functools.partial(_workload_listing, keys),
                dirty,
                extra=keys,
            )

    def _put(
        self,
        type_url: str,
        name: str,
        source: Any,
        encode: Callable[[Any], Message],
        dirty: dict[str, set[str]],
        *,
        extra: object = None,
    ) -> None:
        previous = self._sources[type_url].get(name)
        if previous is not None and previous == (source, extra):
            return
        found, resource = self._cache.get(source, (type_url, extra))
        if not found:
            resource = self._encode(type_url, name, source, encode)
            self._cache.put(source, (type_url, extra), resource)
        if resource is None:
            self._drop(type_url, name, dirty)
            return
        before = self.resources[type_url].get(name)
        self._sources[type_url][name] = (source, extra)
        if before is not None and before.version == resource.version:
            return  # the same content from a new object: nothing to send
        self.resources[type_url][name] = resource
        dirty[type_url].add(name)

    def _encode(
        self, type_url: str, name: str, source: Any, encode: Callable[[Any], Message]
    ) -> discovery_pb2.Resource | None:
        try:
            message = encode(source)
        except ValueError as exc:  # a control plane bug: report it, keep serving the rest
            log.error(
                "cannot encode %s %s for node %s: %s; not sent",
                type_url.rpartition("/")[2],
                name,
                self._node,
                exc,
            )
            return None
        packed = any_pb2.Any()
        packed.Pack(message, deterministic=True)
        return discovery_pb2.Resource(name=name, version=resource_version(packed), resource=packed)

    def _drop(self, type_url: str, name: str, dirty: dict[str, set[str]]) -> None:
        self.resources[type_url].pop(name, None)
        self._sources[type_url].pop(name, None)
        dirty[type_url].add(name)


class Published:
    """The mesh encoded once for every stream, and a log of the names each change touched.

    Every stream sees the whole mesh (as istiod serves ztunnel), so one ``MeshView`` serves
    them all. ``rev`` counts the changes taken in; a stream remembers the ``rev`` its
    client holds and sends the names touched since (``names_since``).
    """

    def __init__(self, plane: ControlPlane, root_namespace: str, cache: EncodeCache) -> None:
        self._plane = plane
        self.view = MeshView("*", root_namespace, cache)
        self.rev = 0
        self._version = -1  # the plane version the view holds
        self._snapshot = EMPTY
        self._log: collections.deque[tuple[int, dict[str, set[str]]]] = collections.deque(
            maxlen=_LOG_LENGTH
        )
        self._blobs: dict[str, tuple[int, bytes]] = {}

    def catch_up(self) -> None:
        """Take in the plane's changes since the last call (one ``Delta``, shared)."""
        plane = self._plane
        if self._version == plane.version and self._snapshot is plane.snapshot:
            return
        if self._version < 0:
            delta = plane.full_state()
        else:
            delta = plane.changes_since(self._version, self._snapshot)
        self._version, self._snapshot = plane.version, plane.snapshot
        dirty = self.view.apply(delta)
        if any(dirty.values()):
            self.rev += 1
            self._log.append((self.rev, dirty))

    def names_since(self, rev: int, type_url: str) -> set[str] | None:
        """Names of ``type_url`` touched after ``rev``; None if the log no longer reaches back."""
        if rev == self.rev:
            return set()
        missed = [dirty[type_url] for r, dirty in self._log if r > rev]
        if len(missed) != self.rev - rev:
            return None
        return set().union(*missed)

    def everything(self, type_url: str) -> bytes:
        """Every resource of ``type_url`` as the ``resources`` fields of a response, serialized
        once per ``rev`` (a response is its fields' concatenation, so each stream appends
        its own nonce)."""
        cached = self._blobs.get(type_url)
        if cached is None or cached[0] != self.rev:
            resources = self.view.resources[type_url]
            blob = discovery_pb2.DeltaDiscoveryResponse(
                resources=[resources[name] for name in sorted(resources)]
            ).SerializeToString()
            cached = self._blobs[type_url] = (self.rev, blob)
        return cached[1]
