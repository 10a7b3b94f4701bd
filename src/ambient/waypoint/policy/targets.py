"""Which policies a waypoint enforces: ``targetRefs`` attachment, as Istio's waypoints do.

Follows istiod's ``WorkloadPolicyMatcher.ShouldAttachPolicy`` for a waypoint
(``pilot/pkg/model/policyattachment.go``). A policy (AuthorizationPolicy or
RequestAuthentication) attaches to waypoint ``ns/name`` through a targetRef of:

- ``Gateway`` (group ``gateway.networking.k8s.io``) named ``name``, from a policy
  in ``ns``: every request the waypoint handles;
- ``GatewayClass`` ``istio-waypoint`` (same group), from a policy in the root
  namespace (``istio-system``): every request of every waypoint;
- ``Service`` (core group) / ``ServiceEntry`` (``networking.istio.io``), from a
  policy in the service's namespace: only requests addressed to that service.

A targetRef ``namespace`` other than the policy's never matches (Istio does not
support cross-namespace attachment). Policies without targetRefs, including
selector and namespace-wide ones, never apply to waypoints: ztunnel enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ambient.config.targetref import TargetRef
from ambient.waypoint.model import Target

__all__ = [
    "ROOT_NAMESPACE",
    "WAYPOINT_CLASS",
    "ServiceRef",
    "WaypointRef",
    "attaches_to_service",
    "attaches_to_waypoint",
    "is_known_kind",
    "kubernetes_service_of",
]

ROOT_NAMESPACE = "istio-system"
WAYPOINT_CLASS = "istio-waypoint"
_GATEWAY_GROUP = "gateway.networking.k8s.io"
_ISTIO_NETWORKING = "networking.istio.io"


@dataclass(frozen=True, slots=True)
class WaypointRef:
    """The waypoint whose policies are selected: its Gateway's namespace and name."""

    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """The object a request's target service came from: ``Service`` or ``ServiceEntry``."""

    namespace: str
    name: str
    kind: str = "Service"


def kubernetes_service_of(target: Target) -> ServiceRef | None:
    """The Service behind ``<name>.<namespace>.svc.<domain>``; None for workloads and others."""
    if target.hostname is None:
        return None
    labels = target.hostname.split(".")
    if len(labels) >= 3 and labels[1] == target.namespace and labels[2] == "svc":
        return ServiceRef(target.namespace, labels[0])
    return None


def _group(ref: TargetRef) -> str:
    return "" if ref.group == "core" else ref.group


def attaches_to_waypoint(
    policy_namespace: str, refs: tuple[TargetRef, ...], waypoint: WaypointRef, root_namespace: str
) -> bool:
    """Whether a ref names the waypoint itself (Gateway) or every waypoint (GatewayClass)."""
    for ref in refs:
        if _group(ref) != _GATEWAY_GROUP:
            continue
        if (
            ref.kind == "GatewayClass"
            and ref.name == WAYPOINT_CLASS
            and policy_namespace == root_namespace
        ):
            return True
        if (
            ref.kind == "Gateway"
            and ref.name == waypoint.name
            and policy_namespace == waypoint.namespace
            and ref.namespace in ("", waypoint.namespace)
        ):
            return True
    return False


def attaches_to_service(
    policy_namespace: str, refs: tuple[TargetRef, ...], service: ServiceRef | None
) -> bool:
    """Whether a ref names ``service`` (the request's destination service)."""
    if service is None or policy_namespace != service.namespace:
        return False
    group = "" if service.kind == "Service" else _ISTIO_NETWORKING
    return any(
        ref.kind == service.kind
        and _group(ref) == group
        and ref.name == service.name
        and ref.namespace in ("", service.namespace)
        for ref in refs
    )


def is_known_kind(ref: TargetRef) -> bool:
    """Whether a waypoint can ever attach through ``ref`` (for load warnings)."""
    return (_group(ref), ref.kind) in {
        (_GATEWAY_GROUP, "Gateway"),
        (_GATEWAY_GROUP, "GatewayClass"),
        ("", "Service"),
        (_ISTIO_NETWORKING, "ServiceEntry"),
    }
