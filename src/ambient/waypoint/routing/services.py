"""The mesh's services as routing sees them: namespace, name, FQDN, port numbers.

``build_router`` takes services from the configuration (``config.Service``),
from the xDS-fed workload API (``state.workload.Service``), or as ``MeshService``
directly; ``ServiceIndex`` resolves the names routes use: a short name
(``orders``) in the referring object's namespace, or an FQDN (as Istio,
``orders.shop`` is not expanded).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ambient.config.resources import Service as ConfigService
from ambient.config.rules import CLUSTER_DOMAIN
from ambient.state import workload

__all__ = ["MeshService", "ServiceIndex", "ServiceLike"]


@dataclass(frozen=True, slots=True)
class MeshService:
    namespace: str
    name: str
    hostname: str  # FQDN
    ports: tuple[int, ...]


ServiceLike = MeshService | workload.Service | ConfigService


def _mesh_service(service: ServiceLike, domain: str) -> MeshService:
    if isinstance(service, MeshService):
        return service
    if isinstance(service, workload.Service):
        ports = tuple(p.service_port for p in service.ports)
        return MeshService(service.namespace, service.name, service.hostname, ports)
    name, namespace = service.meta.name, service.meta.namespace
    ports = tuple(p.port for p in service.spec.ports)
    return MeshService(namespace, name, f"{name}.{namespace}.svc.{domain}", ports)


class ServiceIndex:
    """Services by FQDN and by namespace/name."""

    def __init__(self, services: Iterable[ServiceLike], domain: str = CLUSTER_DOMAIN) -> None:
        self.domain = domain
        self.by_hostname: dict[str, MeshService] = {}
        self.by_name: dict[tuple[str, str], MeshService] = {}
        for item in services:
            service = _mesh_service(item, domain)
            self.by_hostname.setdefault(service.hostname, service)
            self.by_name.setdefault((service.namespace, service.name), service)

    def all(self) -> list[MeshService]:
        """Every service, by hostname."""
        return sorted(self.by_hostname.values(), key=lambda s: s.hostname)

    def named(self, namespace: str, name: str) -> MeshService | None:
        return self.by_name.get((namespace, name))

    def fqdn(self, host: str, namespace: str) -> str:
        """Istio's short-name rule: a host without dots is a service in ``namespace``."""
        host = host.lower().rstrip(".")
        if "." not in host:
            return f"{host}.{namespace}.svc.{self.domain}"
        return host

    def resolve(self, host: str, namespace: str) -> MeshService | None:
        return self.by_hostname.get(self.fqdn(host, namespace))

    def matching(self, pattern: str, namespace: str) -> list[MeshService]:
        """Services a VirtualService host names: exact, ``*.suffix`` or ``*``."""
        if pattern == "*":
            return self.all()
        if pattern.startswith("*."):
            suffix = pattern[1:].lower()
            return [s for s in self.all() if s.hostname.endswith(suffix)]
        found = self.resolve(pattern, namespace)
        return [found] if found else []
