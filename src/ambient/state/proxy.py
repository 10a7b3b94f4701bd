"""What one ztunnel knows about the mesh: workloads and services pushed by the control plane.

Updates arrive as (upserted resources, removed resource names), exactly the
shape of an xDS delta for ``istio.workload.Address``: workloads are named by
uid, services by ``namespace/hostname``. Each update is applied atomically
(a lookup never sees half of a push) and all lookups are dictionary hits.

A push costs what it changes, not the size of the mesh: the lookup indexes
(by IP, VIP, hostname, a service's endpoints) are updated for the resources
the push names. ``workloads`` and ``services`` themselves are copied per push
(a C-level dict copy), so a reader holding the previous dicts keeps a
consistent view (the xDS subscription diffs old against new). When two
resources claim one address or hostname, the lowest uid/key wins, whatever
order they arrived in.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ambient.authz.model import Authorization
from ambient.authz.peerauth import PeerAuthentication
from ambient.authz.store import PolicyStore
from ambient.config.rules import CLUSTER_DOMAIN
from ambient.state.workload import (
    GatewayAddress,
    IPAddress,
    Port,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
)

SERVING_KEPT = 4096  # (service, port) pairs whose serving endpoints are kept between pushes
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where an outbound connection goes once the destination is resolved."""

    workload: Workload | None  # None: an address the mesh does not know (passthrough)
    ip: IPAddress
    port: int  # the workload's port (after service port -> target port)
    service: Service | None = None
    # Set when the destination uses a waypoint: ``workload`` is then the waypoint's pod
    # (whose :15008 the HBONE connection goes to) and ``ip:port`` the address the client
    # dialled (a service VIP and port, or a workload's), sent as the CONNECT authority.
    via_waypoint: bool = False

    @property
    def hbone(self) -> bool:
        if self.via_waypoint:
            return True
        return self.workload is not None and self.workload.tunnel_protocol is TunnelProtocol.HBONE

    @property
    def tunnel_ip(self) -> IPAddress:
        """The address whose port 15008 an HBONE connection goes to."""
        if self.via_waypoint and self.workload is not None and self.workload.addresses:
            return self.workload.addresses[0]
        return self.ip


class ProxyState:
    """Indexed workloads and services, replaced atomically per push."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.workloads: dict[str, Workload] = {}
        self.services: dict[str, Service] = {}
        self._by_ip: dict[IPAddress, Workload] = {}
        self._by_vip: dict[IPAddress, Service] = {}
        self._by_host: dict[str, Service] = {}
        self._endpoints: dict[str, list[Workload]] = {}
        # Who claims each index key (to pick the winner again when one leaves), and the
        # workloads naming each service key, also of services not (yet) known here.
        self._ip_owners: dict[IPAddress, dict[str, Workload]] = {}
        self._vip_owners: dict[IPAddress, dict[str, Service]] = {}
        self._host_owners: dict[str, dict[str, Service]] = {}
        self._members: dict[str, dict[str, Workload]] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        # The endpoints serving (service, port, target port), kept until the next push.
        self._serving: dict[tuple[str, int, int], list[Upstream]] = {}
        self._listeners: list[Callable[[ProxyState], None]] = []
        self.version = 0  # counts applied pushes (caches built from the state key on it)
        self.policies = PolicyStore()

    def on_change(self, callback: Callable[[ProxyState], None]) -> None:
        """Call ``callback`` after every applied push."""
        self._listeners.append(callback)

    def apply(
        self,
        upserted: Iterable[Workload | Service],
        removed: Iterable[str],
        policies_upserted: Iterable[Authorization | PeerAuthentication] = (),
        policies_removed: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Apply one push: resources added or changed, names removed, then policies.

        Addresses first, policies after, so a policy never applies to a
        workload this ztunnel does not know yet.
        """
        self._serving = {}  # first: whatever this push changes, no pick sees the old endpoints
        if not self.workloads and not self.services:  # the first push: index it in one pass
            workloads: dict[str, Workload] = {}
            services: dict[str, Service] = {}
            for resource in upserted:
                if isinstance(resource, Workload):
                    workloads[resource.uid] = resource
                else:
                    services[resource.key] = resource
            self._rebuild(workloads, services)
        else:
            self._apply_addresses(upserted, removed)
        for kind, key in policies_removed:
            namespace, _, name = key.partition("/")
            if kind == "AuthorizationPolicy":
                self.policies.remove_authorization(namespace, name)
            else:
                self.policies.remove_peer_authentication(namespace, name)
        for policy in policies_upserted:
            if isinstance(policy, Authorization):
                self.policies.put_authorization(policy)
            else:
                self.policies.put_peer_authentication(policy)
        self.version += 1
        for callback in self._listeners:
            callback(self)

    def _apply_addresses(
        self, upserted: Iterable[Workload | Service], removed: Iterable[str]
    ) -> None:
        """Update the indexes for what the push names; swap in the copied dicts at the end."""
        workloads = dict(self.workloads)
        services = dict(self.services)
        touched: set[str] = set()  # service keys whose endpoint lists change
        try:
            for name in removed:
                gone_workload = workloads.pop(name, None)
                if gone_workload is not None:
                    self._unindex_workload(gone_workload, touched)
                gone_service = services.pop(name, None)
                if gone_service is not None:
                    self._unindex_service(gone_service, touched)
            for resource in upserted:
                if isinstance(resource, Workload):
                    previous = workloads.get(resource.uid)
                    if previous is not None:
                        self._unindex_workload(previous, touched)
                    workloads[resource.uid] = resource
                    self._index_workload(resource, touched)
                else:
                    old_service = services.get(resource.key)
                    if old_service is not None:
                        self._unindex_service(old_service, touched)
                    services[resource.key] = resource
                    self._index_service(resource, touched)
            for key in touched:
                if key in services:
                    members = self._members.get(key, {})
                    self._endpoints[key] = [members[uid] for uid in sorted(members)]
                else:
                    self._endpoints.pop(key, None)
        except Exception:
            # Nothing of a failed push may stay: index the previous state again.
            self._rebuild(self.workloads, self.services)
            raise
        self.workloads, self.services = workloads, services

    def _rebuild(self, workloads: dict[str, Workload], services: dict[str, Service]) -> None:
        """Index ``workloads`` and ``services`` from scratch (the reference for ``apply``)."""
        ip_owners: dict[IPAddress, dict[str, Workload]] = {}
        members: dict[str, dict[str, Workload]] = {}
        for uid, workload in workloads.items():
            for ip in workload.addresses:
                ip_owners.setdefault(ip, {})[uid] = workload
            for key in workload.services:
                members.setdefault(key, {})[uid] = workload
        vip_owners: dict[IPAddress, dict[str, Service]] = {}
        host_owners: dict[str, dict[str, Service]] = {}
        for key, service in services.items():
            for ip in service.addresses:
                vip_owners.setdefault(ip, {})[key] = service
            host_owners.setdefault(service.hostname, {})[key] = service
        self._ip_owners, self._vip_owners, self._host_owners = ip_owners, vip_owners, host_owners
        self._members = members
        self._by_ip = {ip: claims[min(claims)] for ip, claims in ip_owners.items()}
        self._by_vip = {ip: claims[min(claims)] for ip, claims in vip_owners.items()}
        self._by_host = {host: claims[min(claims)] for host, claims in host_owners.items()}
        self._endpoints = {
            key: [m[uid] for uid in sorted(m)] for key in services for m in [members.get(key, {})]
        }
        self.workloads, self.services = workloads, services

    def _index_workload(self, workload: Workload, touched: set[str]) -> None:
        for ip in workload.addresses:
            _claim(self._by_ip, self._ip_owners, ip, workload.uid, workload)
        for key in workload.services:
            self._members.setdefault(key, {})[workload.uid] = workload
            touched.add(key)

    def _unindex_workload(self, workload: Workload, touched: set[str]) -> None:
        for ip in workload.addresses:
            _release(self._by_ip, self._ip_owners, ip, workload.uid)
        for key in workload.services:
            members = self._members.get(key)
            if members is not None:
                members.pop(workload.uid, None)
                if not members:
                    del self._members[key]
            touched.add(key)

    def _index_service(self, service: Service, touched: set[str]) -> None:
        for ip in service.addresses:
            _claim(self._by_vip, self._vip_owners, ip, service.key, service)
        _claim(self._by_host, self._host_owners, service.hostname, service.key, service)
        touched.add(service.key)

    def _unindex_service(self, service: Service, touched: set[str]) -> None:
        for ip in service.addresses:
            _release(self._by_vip, self._vip_owners, ip, service.key)
        _release(self._by_host, self._host_owners, service.hostname, service.key)
        touched.add(service.key)

    # -- lookups -------------------------------------------------------------------

    def workload_by_ip(self, ip: IPAddress) -> Workload | None:
        return self._by_ip.get(ip)

    def service_by_vip(self, ip: IPAddress) -> Service | None:
        return self._by_vip.get(ip)

    def local_workloads(self) -> list[Workload]:
        """Workloads this node runs (the ones this ztunnel serves)."""
        return [w for w in self.workloads.values() if w.node == self.node and w.local]

    def resolve_host(self, name: str, from_namespace: str) -> Service | None:
        """A mesh hostname: ``svc`` (same namespace), ``svc.ns``, ``svc.ns.svc[.cluster.local]``."""
        name = name.rstrip(".").lower()
        parts = name.split(".")
        if len(parts) == 1:
            candidate = f"{name}.{from_namespace}.svc.{CLUSTER_DOMAIN}"
        elif len(parts) == 2:
            candidate = f"{name}.svc.{CLUSTER_DOMAIN}"
        elif len(parts) == 3 and parts[2] == "svc":
            candidate = f"{name}.cluster.local"
        else:
            candidate = name
        return self._by_host.get(candidate) or self._by_host.get(name)

    def endpoints(self, service: Service) -> list[Workload]:
        return self._endpoints.get(service.key, [])

    def pick_endpoint(
        self, service: Service, port: int, exclude: Collection[str] = ()
    ) -> Upstream | None:
        """Round robin over the service's healthy endpoints that serve ``port`` (but the
        uids in ``exclude``: endpoints a connection already failed to reach). Until the
        next push the same endpoint is the same ``Upstream`` object (they are immutable)."""
        target = _target_port(service, port)
        if target is None:
            return None
        key = (service.key, port, target)
        candidates = self._serving.get(key)
        if candidates is None:
            candidates = []
            for workload in self._endpoints.get(service.key, ()):
                if workload.status is not WorkloadStatus.HEALTHY or not workload.addresses:
                    continue
                ports = workload.services.get(service.key, ())
                workload_port = _workload_port(ports, port, target)
                if workload_port is not None:
                    candidates.append(
                        Upstream(workload, workload.addresses[0], workload_port, service)
                    )
            if len(self._serving) >= SERVING_KEPT:
                self._serving.clear()
            self._serving[key] = candidates
        if exclude:
            candidates = [
                c for c in candidates if c.workload is not None and c.workload.uid not in exclude
            ]
        if not candidates:
            return None
        counter = self._round_robin.setdefault(service.key, itertools.count())
        return candidates[next(counter) % len(candidates)]

    def workload_port(self, service: Service, workload: Workload, port: int) -> int | None:
        """The port ``workload`` serves ``service``'s ``port`` on (None: it does not serve it)."""
        target = _target_port(service, port)
        if target is None:
            return None
        return _workload_port(workload.services.get(service.key, ()), port, target)

    def resolve(self, ip: IPAddress, port: int, source: Workload | None = None) -> Upstream | None:
        """The upstream for a connection to ``ip:port``: a VIP, a workload, or unknown.

        With ``source`` given, a destination bound to a waypoint resolves to the
        waypoint (see ``waypoint_upstream``) unless the source is that waypoint.
        """
        service = self._by_vip.get(ip)
        if service is not None:
            if service.waypoint is not None and source is not None:
                return self.waypoint_upstream(service.waypoint, ip, port, source, service)
            return self.pick_endpoint(service, port)
        workload = self._by_ip.get(ip)
        if workload is not None and workload.waypoint is not None and source is not None:
            return self.waypoint_upstream(workload.waypoint, ip, port, source, None)
        return Upstream(workload, ip, port)

    def waypoint_upstream(
        self,
        gateway: GatewayAddress,
        ip: IPAddress,
        port: int,
        source: Workload,
        service: Service | None,
    ) -> Upstream | None:
        """Send a connection for ``ip:port`` through the waypoint ``gateway`` names.

        A waypoint's own connections go direct (it is the one forwarding them).
        None when the waypoint has no healthy replica: the connection fails, as in
        Istio, rather than bypass the waypoint's policy.
        """
        if any(w.uid == source.uid for w in self.waypoint_replicas(gateway)):
            return self.direct(ip, port, service)
        waypoint_service = self.services.get(gateway.destination)
        if waypoint_service is not None:
            picked = self.pick_endpoint(waypoint_service, gateway.hbone_mtls_port)
            waypoint = picked.workload if picked is not None else None
        else:
            replicas = self.waypoint_replicas(gateway)
            waypoint = replicas[0] if replicas else None
        if waypoint is None:
            return None
        return Upstream(waypoint, ip, port, service, via_waypoint=True)

    def waypoint_replicas(self, gateway: GatewayAddress) -> list[Workload]:
        """The workloads of waypoint ``gateway``: its Service's endpoints, or the one at its IP."""
        waypoint_service = self.services.get(gateway.destination)
        if waypoint_service is not None:
            return self._endpoints.get(waypoint_service.key, [])
        by_ip = _parse_ip(gateway.destination)
        found = self._by_ip.get(by_ip) if by_ip is not None else None
        return [found] if found is not None else []

    def is_waypoint_identity(self, gateway: GatewayAddress, identity: str) -> bool:
        """Whether ``identity`` (a SPIFFE URI) is that of a replica of waypoint ``gateway``."""
        return any(str(w.identity) == identity for w in self.waypoint_replicas(gateway))

    def direct(self, ip: IPAddress, port: int, service: Service | None) -> Upstream | None:
        """The upstream for ``ip:port`` ignoring waypoints (the waypoint's own view)."""
        if service is not None:
            return self.pick_endpoint(service, port)
        return Upstream(self._by_ip.get(ip), ip, port)


def _claim(index: dict[K, V], owners: dict[K, dict[str, V]], key: K, owner: str, value: V) -> None:
    """``owner`` claims ``index[key]``; the lowest owner name holds it."""
    claims = owners.setdefault(key, {})
    claims[owner] = value
    index[key] = claims[min(claims)]


def _release(index: dict[K, V], owners: dict[K, dict[str, V]], key: K, owner: str) -> None:
    claims = owners.get(key)
    if claims is None or claims.pop(owner, None) is None:
        return
    if claims:
        index[key] = claims[min(claims)]
    else:
        del owners[key]
        index.pop(key, None)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _target_port(service: Service, port: int) -> int | None:
    for p in service.ports:
        if p.service_port == port:
            return p.target_port or port
    return None


def _workload_port(ports: tuple[Port, ...], service_port: int, default: int) -> int | None:
    for p in ports:
        if p.service_port == service_port:
            return p.target_port or service_port
    return default if not ports else None
