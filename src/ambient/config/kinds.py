"""The built-in kinds: which apiVersions serve them and which node parses each.

Typed kinds are parsed by the tables in ``kube``, ``pods`` and ``istio``.
AuthorizationPolicy and PeerAuthentication load as ``GenericResource`` with
their specs checked by ``ambient.authz`` (see ``security``). Each other kind has its own
module: ``gateway``, ``httproute``, ``grpcroute``, ``virtualservice``, ``destinationrule``,
``requestauthn``, ``telemetry`` (the waypoint compiles the L7 ones into routes and policies).
``GENERIC_KINDS`` (metadata checked, spec kept as YAML) is empty: every kind is strict.
"""

from __future__ import annotations

from typing import Any

from ambient.config.destinationrule import DESTINATION_RULE
from ambient.config.gateway import GATEWAY
from ambient.config.grpcroute import GRPCROUTE
from ambient.config.httproute import HTTPROUTE
from ambient.config.istio import SERVICE_ENTRY, WORKLOAD_ENTRY
from ambient.config.kube import NAMESPACE, SERVICE, SERVICE_ACCOUNT
from ambient.config.meshconfig import CONFIG_MAP
from ambient.config.meta import resource_schema
from ambient.config.pods import DEPLOYMENT, POD
from ambient.config.requestauthn import REQUEST_AUTHENTICATION
from ambient.config.resources import GenericResource
from ambient.config.schema import AnyMapping, Node, Obj
from ambient.config.security import AUTHORIZATION_POLICY, PEER_AUTHENTICATION
from ambient.config.telemetry import TELEMETRY
from ambient.config.virtualservice import VIRTUAL_SERVICE

__all__ = ["BUILTIN_KINDS", "GENERIC_KINDS", "generic_schema"]


def generic_schema() -> Obj[GenericResource]:
    """Metadata checked, ``spec`` kept as deep-frozen YAML (see ``GenericResource``)."""
    return resource_schema(GenericResource, AnyMapping())


ISTIO_NETWORKING = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)
ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")
GATEWAY_API = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")
GATEWAY_API_GRPC = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2")
ISTIO_TELEMETRY = ("telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1")

BUILTIN_KINDS: tuple[tuple[tuple[str, ...], str, Node[Any]], ...] = (
    (("v1",), "Namespace", NAMESPACE),
    (("v1",), "ServiceAccount", SERVICE_ACCOUNT),
    (("v1",), "ConfigMap", CONFIG_MAP),  # istio-system/istio: the mesh config
    (("v1",), "Service", SERVICE),
    (("v1",), "Pod", POD),
    (("apps/v1",), "Deployment", DEPLOYMENT),
    (ISTIO_NETWORKING, "WorkloadEntry", WORKLOAD_ENTRY),
    (ISTIO_NETWORKING, "ServiceEntry", SERVICE_ENTRY),
    (ISTIO_SECURITY, "AuthorizationPolicy", AUTHORIZATION_POLICY),
    (ISTIO_SECURITY, "PeerAuthentication", PEER_AUTHENTICATION),
    (ISTIO_SECURITY, "RequestAuthentication", REQUEST_AUTHENTICATION),
    (GATEWAY_API, "Gateway", GATEWAY),
    (GATEWAY_API, "HTTPRoute", HTTPROUTE),
    (GATEWAY_API_GRPC, "GRPCRoute", GRPCROUTE),
    (ISTIO_NETWORKING, "VirtualService", VIRTUAL_SERVICE),
    (ISTIO_NETWORKING, "DestinationRule", DESTINATION_RULE),
    (ISTIO_TELEMETRY, "Telemetry", TELEMETRY),
)
GENERIC_KINDS: tuple[tuple[tuple[str, ...], str], ...] = ()
