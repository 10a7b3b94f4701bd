"""``MeshSnapshot``: the ambient index at one moment, with indexed lookups; ``diff`` of two.

Resource names are Istio's xDS names: a workload's ``uid``, a service's
``namespace/hostname``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ambient.authz.model import Authorization
from ambient.authz.peerauth import PeerAuthentication
from ambient.config.frozen import FrozenMap
from ambient.config.rules import CLUSTER_DOMAIN
from ambient.state.workload import Address, IPAddress, Service, Workload

__all__ = ["EMPTY", "Delta", "MeshSnapshot", "Touched", "diff"]


def _ip_priority(workload: Workload) -> tuple[bool, bool, str]:
    # Pods first, then WorkloadEntries, then ServiceEntry endpoints (which may share addresses).
    return (not workload.local, "/ServiceEntry/" in workload.uid, workload.uid)


@dataclass(frozen=True)
class _Index:
    by_ip: dict[IPAddress, Workload]
    by_vip: dict[IPAddress, Service]
    by_host: dict[str, tuple[Service, ...]]
    endpoints: dict[str, tuple[Workload, ...]]
    on_node: dict[str, tuple[Workload, ...]]


def _build_index(workloads: Mapping[str, Workload], services: Mapping[str, Service]) -> _Index:
    by_ip: dict[IPAddress, Workload] = {}
    endpoints: dict[str, list[Workload]] = {}
    on_node: dict[str, list[Workload]] = {}
    for workload in sorted(workloads.values(), key=_ip_priority):
        for address in workload.addresses:
            by_ip.setdefault(address, workload)
    for uid in sorted(workloads):
        workload = workloads[uid]
        on_node.setdefault(workload.node, []).append(workload)
        for key in workload.services:
            endpoints.setdefault(key, []).append(workload)
    by_vip: dict[IPAddress, Service] = {}
    by_host: dict[str, list[Service]] = {}
    for key in sorted(services):
        service = services[key]
        for address in service.addresses:
            by_vip.setdefault(address, service)
        by_host.setdefault(service.hostname, []).append(service)
    return _Index(
        by_ip,
        by_vip,
        {host: tuple(found) for host, found in by_host.items()},
        {key: tuple(found) for key, found in endpoints.items()},
        {node: tuple(found) for node, found in on_node.items()},
    )


@dataclass(frozen=True)
class MeshSnapshot:
    """Workloads by uid, services by ``ns/hostname``, node addresses, and build warnings."""

    workloads: Mapping[str, Workload] = field(default_factory=FrozenMap)
    services: Mapping[str, Service] = field(default_factory=FrozenMap)
    warnings: tuple[str, ...] = ()
    nodes: Mapping[str, IPAddress] = field(default_factory=FrozenMap)
    authorizations: Mapping[str, Authorization] = field(default_factory=FrozenMap)
    peer_authentications: Mapping[str, PeerAuthentication] = field(default_factory=FrozenMap)
    # What waypoints enforce: xDS name ``Kind/namespace/name`` -> manifest JSON
    # (``ambient.config.l7objects``).
    l7_manifests: Mapping[str, str] = field(default_factory=FrozenMap)
    _lazy_index: list[_Index] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "workloads",
            "services",
            "nodes",
            "authorizations",
            "peer_authentications",
            "l7_manifests",
        ):
            value = getattr(self, name)
            if not isinstance(value, FrozenMap):  # a FrozenMap is kept: it cannot change
                object.__setattr__(self, name, FrozenMap(value.items()))
        for key, service in self.services.items():
            if key != service.key:
                raise ValueError(f"service {service.key} is stored under the wrong key {key!r}")
        for uid, workload in self.workloads.items():
            if uid != workload.uid:
                raise ValueError(f"workload {workload.uid} is stored under the wrong key {uid!r}")
        object.__setattr__(self, "_lazy_index", [])

    @property
    def _index(self) -> _Index:
        # Built on the first lookup: the control plane makes a snapshot per change and
        # most are never looked up (pushes only diff them).
        if not self._lazy_index:
            self._lazy_index.append(_build_index(self.workloads, self.services))
        return self._lazy_index[0]

    def workload_by_ip(self, ip: IPAddress) -> Workload | None:
        """The workload at ``ip`` (a pod before a WorkloadEntry before a ServiceEntry endpoint)."""
        return self._index.by_ip.get(ip)

    def service_by_vip(self, ip: IPAddress) -> Service | None:
        """The service whose virtual IP is ``ip``."""
        return self._index.by_vip.get(ip)

    def service_by_host(self, name: str, from_namespace: str) -> Service | None:
        """Resolve a hostname as a client in ``from_namespace`` would.

        An exact hostname (ServiceEntry hosts, ``<svc>.<ns>.svc.cluster.local``)
        matches from anywhere, preferring the client's namespace; ``<svc>.<ns>``
        and ``<svc>.<ns>.svc`` expand to the cluster hostname; a bare ``<svc>``
        only names a Service of ``from_namespace``.
        """
        host = name.lower().rstrip(".")
        found = self._index.by_host.get(host)
        if found:
            return next((s for s in found if s.namespace == from_namespace), found[0])
        parts = host.split(".")
        if len(parts) == 1:
            namespace, full = from_namespace, f"{host}.{from_namespace}.svc.{CLUSTER_DOMAIN}"
        elif len(parts) == 2:
            namespace, full = parts[1], f"{host}.svc.{CLUSTER_DOMAIN}"
        elif len(parts) == 3 and parts[2] == "svc":
            namespace, full = parts[1], f"{host}.{CLUSTER_DOMAIN}"
        else:
            return None
        return self.services.get(f"{namespace}/{full}")

    def endpoints(self, service: Service | str) -> tuple[Workload, ...]:
        """Workloads naming ``service`` (or its ``ns/hostname`` key), by uid."""
        key = service if isinstance(service, str) else service.key
        return self._index.endpoints.get(key, ())

    def workloads_on(self, node: str) -> tuple[Workload, ...]:
        """Workloads whose node is ``node``, by uid."""
        return self._index.on_node.get(node, ())


EMPTY = MeshSnapshot()


@dataclass(frozen=True)
class Delta:
    """Changed resources: upserts (services, then workloads) and removed names (workloads first).

    That order means a consumer applying it in sequence never holds a workload
    naming a service it does not know.
    """

    upserted: tuple[Address, ...] = ()
    removed: tuple[str, ...] = ()
    policies_upserted: tuple[Authorization | PeerAuthentication, ...] = ()
    policies_removed: tuple[tuple[str, str], ...] = ()  # (kind, "namespace/name")
    l7_upserted: tuple[tuple[str, str], ...] = ()  # (xDS name, manifest JSON) for waypoints
    l7_removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.upserted
            or self.removed
            or self.policies_upserted
            or self.policies_removed
            or self.l7_upserted
            or self.l7_removed
        )


@dataclass(frozen=True)
class Touched:
    """Names that may differ between two snapshots (a superset of what does), by kind.

    Lets ``diff`` look at a few names instead of the whole mesh when the caller knows
    what a change touched (the incremental index does).
    """

    workloads: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    authorizations: frozenset[str] = frozenset()
    peer_authentications: frozenset[str] = frozenset()
    l7_manifests: frozenset[str] = frozenset()

    def __or__(self, other: Touched) -> Touched:
        return Touched(
            self.workloads | other.workloads,
            self.services | other.services,
            self.authorizations | other.authorizations,
            self.peer_authentications | other.peer_authentications,
            self.l7_manifests | other.l7_manifests,
        )


def _upserts(old: Mapping[str, Any], new: Mapping[str, Any], names: Iterable[str]) -> list[Any]:
    out = []
    for key in sorted(names):
        value = new.get(key)
        if value is not None:
            before = old.get(key)
            if before is not value and before != value:
                out.append(value)
    return out


def _removals(old: Mapping[str, Any], new: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    return [key for key in sorted(names) if key in old and key not in new]


def diff(old: MeshSnapshot, new: MeshSnapshot, touched: Touched | None = None) -> Delta:
    """What turns ``old`` into ``new``; ``diff(EMPTY, s)`` is all of ``s``.

    With ``touched``, only those names are compared (the caller vouches that every
    other name is equal in both): the same ``Delta`` at the cost of the change.
    """
    if touched is None:
        touched = Touched(
            frozenset(old.workloads.keys() | new.workloads.keys()),
            frozenset(old.services.keys() | new.services.keys()),
            frozenset(old.authorizations.keys() | new.authorizations.keys()),
            frozenset(old.peer_authentications.keys() | new.peer_authentications.keys()),
            frozenset(old.l7_manifests.keys() | new.l7_manifests.keys()),
        )
    upserted = [
        *_upserts(old.services, new.services, touched.services),
        *_upserts(old.workloads, new.workloads, touched.workloads),
    ]
    removed = [
        *_removals(old.workloads, new.workloads, touched.workloads),
        *_removals(old.services, new.services, touched.services),
    ]
    policies: list[Authorization | PeerAuthentication] = [
        *_upserts(old.authorizations, new.authorizations, touched.authorizations),
        *_upserts(old.peer_authentications, new.peer_authentications, touched.peer_authentications),
    ]
    gone = [
        *(
            ("AuthorizationPolicy", k)
            for k in _removals(old.authorizations, new.authorizations, touched.authorizations)
        ),
        *(
            ("PeerAuthentication", k)
            for k in _removals(
                old.peer_authentications, new.peer_authentications, touched.peer_authentications
            )
        ),
    ]
    l7_upserted = [
        (name, text)
        for name in sorted(touched.l7_manifests)
        if (text := new.l7_manifests.get(name)) is not None and old.l7_manifests.get(name) != text
    ]
    l7_removed = _removals(old.l7_manifests, new.l7_manifests, touched.l7_manifests)
    return Delta(
        tuple(upserted),
        tuple(removed),
        tuple(policies),
        tuple(gone),
        tuple(l7_upserted),
        tuple(l7_removed),
    )
