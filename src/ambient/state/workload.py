"""Workloads and services as Istio's workload API describes them (``workload.proto``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from ambient.frozen import FrozenMap
from ambient.identity.spiffe import SpiffeId

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TunnelProtocol(Enum):
    """How a workload is reached: in the mesh over HBONE, or plain TCP."""

    NONE = "TCP"
    HBONE = "HBONE"


class WorkloadStatus(Enum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class LoadBalancingMode(Enum):
    """Service load balancing: ztunnel picks uniformly among healthy endpoints by default."""

    UNSPECIFIED = "UNSPECIFIED"
    STANDARD = "STANDARD"


class ApplicationTunnel(Enum):
    """How ztunnel hands an inbound connection to the application (workload.proto ``ApplicationTunnel``).

    ``PROXY``: a PROXY protocol v2 header first, carrying the original source
    and destination and the authenticated peer identity (TLV 0xD0).
    """

    NONE = "NONE"
    PROXY = "PROXY"


ANNOTATION_APPLICATION_TUNNEL = "ambient.io/application-tunnel"
LABEL_GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"
"""Set on a waypoint Gateway's pods (as Istio's deployment controller does)."""


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """Where a waypoint is reached: a service hostname (``ns/host``) or an address, on 15008."""

    destination: str  # "namespace/hostname" or an IP
    hbone_mtls_port: int = 15008


class AppProtocol(Enum):
    """What a service port speaks (workload.proto ``AppProtocol``, Istio's numbering).

    Istio derives it from the Kubernetes port's ``appProtocol``, else its name
    prefix (``ambient.controlplane.protocols``). A waypoint picks its upstream
    HTTP version from it, and passes ``TCP``/``TLS`` ports through at L4.
    """

    UNKNOWN = "UNKNOWN"  # not declared: detected, and upstream as the downstream speaks
    HTTP11 = "HTTP11"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    TCP = "TCP"
    TLS = "TLS"


@dataclass(frozen=True, slots=True)
class Port:
    """A service port and the workload port it maps to (0 = same as service port)."""

    service_port: int
    target_port: int
    app_protocol: AppProtocol = AppProtocol.UNKNOWN


@dataclass(frozen=True, slots=True)
class Workload:
    """One addressable workload: a pod, a WorkloadEntry, or a ServiceEntry endpoint."""

    uid: str  # "<cluster>//<Kind>/<namespace>/<name>" as Istio
    name: str
    namespace: str
    addresses: tuple[IPAddress, ...]
    service_account: str
    node: str
    tunnel_protocol: TunnelProtocol
    trust_domain: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    network: str = ""
    workload_name: str = ""  # the owning Deployment, or the pod's own name
    workload_type: str = "pod"  # deployment | pod | workloadentry
    canonical_name: str = ""  # app.kubernetes.io/name or app label
    canonical_revision: str = ""  # app.kubernetes.io/version or version label
    services: FrozenMap[str, tuple[Port, ...]] = field(default_factory=FrozenMap)  # "ns/hostname"
    waypoint: GatewayAddress | None = None
    status: WorkloadStatus = WorkloadStatus.HEALTHY
    labels: FrozenMap[str, str] = field(default_factory=FrozenMap)
    authorization_policies: tuple[str, ...] = ()  # "ns/name" of selector policies that apply
    local: bool = True  # run by this host's runtime (False for WorkloadEntry)
    application_tunnel: ApplicationTunnel = ApplicationTunnel.NONE

    @property
    def identity(self) -> SpiffeId:
        return SpiffeId.workload(self.namespace, self.service_account, self.trust_domain)


@dataclass(frozen=True, slots=True)
class Service:
    """A service: hostname, virtual IPs, ports; endpoints are the workloads naming it."""

    name: str
    namespace: str
    hostname: str  # <name>.<namespace>.svc.cluster.local
    addresses: tuple[IPAddress, ...]
    ports: tuple[Port, ...]
    subject_alt_names: tuple[str, ...] = ()
    waypoint: GatewayAddress | None = None
    load_balancing: LoadBalancingMode = LoadBalancingMode.UNSPECIFIED

    @property
    def key(self) -> str:
        """``namespace/hostname``, the resource name Istio's xDS uses."""
        return f"{self.namespace}/{self.hostname}"


Address = Workload | Service


def waypoint_of(workload: Workload) -> str | None:
    """The waypoint Gateway's name if ``workload`` is one of its pods, else None."""
    return workload.labels.get(LABEL_GATEWAY_NAME) if workload.labels else None
