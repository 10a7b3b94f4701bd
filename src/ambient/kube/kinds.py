"""The kinds the control plane reads from a cluster (and writes), with their API paths."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DAEMONSET",
    "DEPLOYMENT",
    "GATEWAY",
    "GRPCROUTE",
    "HTTPROUTE",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "POD",
    "ROUTE_KINDS",
    "SERVICE",
    "SERVICE_ACCOUNT",
    "SERVICE_ENTRY",
    "WATCHED",
    "KindInfo",
    "by_kind",
]


@dataclass(frozen=True)
class KindInfo:
    """A kind as the API serves it: group, version, plural, whether it is namespaced."""

    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True
    scope: str | None = None  # watched in this namespace only (RBAC grants no more)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        """``/api/v1/namespaces/NS/pods/NAME/status``; without ``namespace``, every namespace."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return self.plural if not self.group else f"{self.plural}.{self.group}"


NAMESPACE = KindInfo("Namespace", "", "v1", "namespaces", namespaced=False)
POD = KindInfo("Pod", "", "v1", "pods")
SERVICE = KindInfo("Service", "", "v1", "services")
NODE = KindInfo("Node", "", "v1", "nodes", namespaced=False)
SERVICE_ACCOUNT = KindInfo("ServiceAccount", "", "v1", "serviceaccounts")
_NETWORKING = "networking.istio.io"
_SECURITY = "security.istio.io"
_GATEWAY_API = "gateway.networking.k8s.io"
WORKLOAD_ENTRY = KindInfo("WorkloadEntry", _NETWORKING, "v1", "workloadentries")
SERVICE_ENTRY = KindInfo("ServiceEntry", _NETWORKING, "v1", "serviceentries")
GATEWAY = KindInfo("Gateway", _GATEWAY_API, "v1", "gateways")
HTTPROUTE = KindInfo("HTTPRoute", _GATEWAY_API, "v1", "httproutes")
GRPCROUTE = KindInfo("GRPCRoute", _GATEWAY_API, "v1", "grpcroutes")
DEPLOYMENT = KindInfo("Deployment", "apps", "v1", "deployments")
DAEMONSET = KindInfo("DaemonSet", "apps", "v1", "daemonsets")  # the CLI's get/wait only
LEASE = KindInfo("Lease", "coordination.k8s.io", "v1", "leases")

WATCHED: tuple[KindInfo, ...] = (
    NAMESPACE,
    POD,
    SERVICE,
    NODE,
    SERVICE_ACCOUNT,
    WORKLOAD_ENTRY,
    SERVICE_ENTRY,
    KindInfo("AuthorizationPolicy", _SECURITY, "v1", "authorizationpolicies"),
    KindInfo("PeerAuthentication", _SECURITY, "v1", "peerauthentications"),
    KindInfo("RequestAuthentication", _SECURITY, "v1", "requestauthentications"),
    GATEWAY,
    HTTPROUTE,
    GRPCROUTE,
    KindInfo("VirtualService", _NETWORKING, "v1", "virtualservices"),
    KindInfo("DestinationRule", _NETWORKING, "v1", "destinationrules"),
    KindInfo("Telemetry", "telemetry.istio.io", "v1", "telemetries"),
    # The mesh config (istio-system/istio, config.meshconfig): the control plane's Role in
    # istio-system lets it read ConfigMaps there, nowhere else.
    KindInfo("ConfigMap", "", "v1", "configmaps", scope="istio-system"),
)
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
_BY_KIND = {info.kind: info for info in (*WATCHED, DEPLOYMENT, DAEMONSET, LEASE)}


def by_kind(kind: str) -> KindInfo:
    """The ``KindInfo`` of a kind the control plane knows; KeyError otherwise."""
    return _BY_KIND[kind]
