"""The analyzers of ``ambient analyze``: each a small function of an ``AnalysisContext``.

Decisions (where Istio's istioctl analyze is silent on ambient, as an operator expects):

- ``istio.io/use-waypoint`` naming a waypoint that does not exist is an error
  (IST0101): istiod leaves the traffic going direct, so L7 policy the author
  meant to apply silently does not. A waypoint that does not serve the binding's
  traffic type (``istio.io/waypoint-for``) is AMB0001. A namespace bound to a
  waypoint but not enrolled (``istio.io/dataplane-mode: ambient``) is AMB0002:
  its pods are not captured, so nothing sends their traffic to the waypoint.
- ``targetRefs`` to a Gateway or Service that does not exist is IST0101; to a
  Service that uses no waypoint, IST0167 (nothing enforces a targetRef'd policy).
- A selector (AuthorizationPolicy, PeerAuthentication, RequestAuthentication,
  Telemetry) matching no workload is IST0127. A root-namespace (``istio-system``)
  selector is matched against every namespace, as Istio applies it mesh-wide.
- An AuthorizationPolicy without targetRefs is enforced by ztunnel, which cannot
  see HTTP attributes: each field it drops is AMB0003 (Istio's ztunnel drops them
  too; istiod only logs it).
- A STRICT PeerAuthentication while some workloads it could be called by are not
  enrolled is AMB0004: their plaintext connections are refused.
- Routes (HTTPRoute, GRPCRoute, VirtualService, DestinationRule): see
  :mod:`ambient.analysis.routes`.
- Telemetry: ztunnel ignores the Telemetry API (as Istio's), so a Telemetry that
  selects only non-waypoint workloads is IST0167.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ambient.analysis import messages as msg
from ambient.analysis.context import AnalysisContext, labels_text
from ambient.analysis.routes import (
    destination_rules,
    faults_with_resilience,
    http_routes,
    route_kinds,
    virtual_services,
)
from ambient.authz.translate import PolicyError, translate_authorization_policy
from ambient.config.configset import Ref
from ambient.config.frozen import FrozenMap
from ambient.config.requestauthn import RequestAuthentication
from ambient.config.resources import (
    LABEL_DATAPLANE_MODE,
    LABEL_USE_WAYPOINT,
    LABEL_USE_WAYPOINT_NAMESPACE,
    LABEL_WAYPOINT_FOR,
    Deployment,
    GenericResource,
    Namespace,
    Pod,
    Resource,
    Service,
    WorkloadEntry,
)
from ambient.config.targetref import parse_target_refs
from ambient.config.telemetry import BUILTIN_PROVIDERS, Telemetry

__all__ = ["ANALYZERS", "Analyzer"]

Analyzer = Callable[[AnalysisContext], None]
ROOT_NAMESPACE = "istio-system"

# Istio's protocol prefixes for Service port names (``http``, ``http-web``, ...).
PORT_PROTOCOLS = frozenset(
    {
        "http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "mongo", "mysql",
        "redis", "udp", "thrift", "dubbo", "zookeeper",
    }
)  # fmt: skip
DEPRECATED_VERSIONS = {
    "networking.istio.io/v1beta1": "networking.istio.io/v1",
    "networking.istio.io/v1alpha3": "networking.istio.io/v1",
    "security.istio.io/v1beta1": "security.istio.io/v1",
    "telemetry.istio.io/v1alpha1": "telemetry.istio.io/v1",
    "gateway.networking.k8s.io/v1beta1": "gateway.networking.k8s.io/v1",
}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# --- waypoints --------------------------------------------------------------------------------


def _binding_objects(ctx: AnalysisContext) -> Iterable[tuple[Resource, Mapping[str, str], str]]:
    """Objects with an explicit ``use-waypoint`` label, and the traffic type they bind."""
    for obj in ctx.config:
        if isinstance(obj, Namespace):
            yield obj, obj.meta.labels, "namespace"
        elif isinstance(obj, Service):
            yield obj, obj.meta.labels, "service"
        elif isinstance(obj, Pod | WorkloadEntry):
            yield obj, obj.meta.labels, "workload"
        elif isinstance(obj, Deployment):
            yield obj, obj.spec.template.meta.labels, "workload"


def waypoint_bindings(ctx: AnalysisContext) -> None:
    """use-waypoint naming a missing waypoint, a waypoint-for mismatch, an unenrolled namespace."""
    for obj, labels, kind in _binding_objects(ctx):
        name = labels.get(LABEL_USE_WAYPOINT)
        if not name or name == "none":
            continue
        own_ns = obj.meta.name if isinstance(obj, Namespace) else obj.meta.namespace
        ns = labels.get(LABEL_USE_WAYPOINT_NAMESPACE) or own_ns
        label_path = (
            "spec.template.metadata.labels" if isinstance(obj, Deployment) else "metadata.labels"
        )
        gateway = ctx.waypoints.get((ns, name))
        if gateway is None:
            ctx.report(
                msg.REFERENCED_RESOURCE_NOT_FOUND,
                obj,
                f'Referenced waypoint not found: "{ns}/{name}" ({LABEL_USE_WAYPOINT}); '
                "traffic goes direct, without its L7 policy",
                f"{label_path}[{LABEL_USE_WAYPOINT}]",
            )
            continue
        serves = gateway.meta.labels.get(LABEL_WAYPOINT_FOR, "service")
        wanted = ("service", "workload") if kind == "namespace" else (kind,)
        if serves != "all" and serves not in wanted:
            ctx.report(
                msg.AMB_WAYPOINT_FOR_MISMATCH,
                obj,
                f"waypoint {ns}/{name} serves {serves!r} traffic ({LABEL_WAYPOINT_FOR}), "
                f"not {kind!r}: this binding is ignored and traffic goes direct",
                f"{label_path}[{LABEL_USE_WAYPOINT}]",
            )
        if isinstance(obj, Namespace) and labels.get(LABEL_DATAPLANE_MODE) != "ambient":
            ctx.report(
                msg.AMB_NAMESPACE_NOT_ENROLLED,
                obj,
                f"bound to waypoint {ns}/{name} but not enrolled ({LABEL_DATAPLANE_MODE} is not "
                "'ambient'): its pods are not captured, so their traffic skips the waypoint",
                f"metadata.labels[{LABEL_USE_WAYPOINT}]",
            )


# --- targetRefs ---------------------------------------------------------------------------------


def _service_waypoint(ctx: AnalysisContext, service: Service) -> str | None:
    labels = service.meta.labels
    name = labels.get(LABEL_USE_WAYPOINT)
    ns_labels: Mapping[str, str] = ctx.namespace_labels.get(service.meta.namespace, {})
    if name is None:
        name = ns_labels.get(LABEL_USE_WAYPOINT)
    return None if not name or name == "none" else name


def _target_refs(obj: Resource) -> list[tuple[str, str, str, str]]:
    """(group, kind, name, path) of an object's targetRefs (policies and Telemetry)."""
    if isinstance(obj, Telemetry):
        refs = obj.spec.targets
        return [(r.group, r.kind, r.name, f"spec.targetRefs[{i}]") for i, r in enumerate(refs)]
    spec = getattr(obj, "spec", None)
    if isinstance(obj, RequestAuthentication):
        listed = obj.spec.target_refs or ((obj.spec.target_ref,) if obj.spec.target_ref else ())
        return [(r.group, r.kind, r.name, f"spec.targetRefs[{i}]") for i, r in enumerate(listed)]
    if isinstance(spec, FrozenMap):
        try:
            parsed = parse_target_refs(_plain(spec))
        except ValueError:
            return []
        return [(r.group, r.kind, r.name, f"spec.targetRefs[{i}]") for i, r in enumerate(parsed)]
    return []


def target_refs(ctx: AnalysisContext) -> None:
    """targetRefs to a missing Gateway/Service, or to a Service no waypoint serves."""
    for obj in ctx.config:
        if obj.kind not in ("AuthorizationPolicy", "RequestAuthentication", "Telemetry"):
            continue
        ns = obj.meta.namespace
        for _group, kind, name, path in _target_refs(obj):
            if kind == "Gateway":
                if ctx.config.get("Gateway", ns, name) is None:
                    ctx.report(
                        msg.REFERENCED_RESOURCE_NOT_FOUND,
                        obj,
                        f'Referenced gateway not found: "{ns}/{name}"',
                        path,
                    )
            elif kind == "Service":
                service = ctx.config.get("Service", ns, name)
                if not isinstance(service, Service):
                    ctx.report(
                        msg.REFERENCED_RESOURCE_NOT_FOUND,
                        obj,
                        f'Referenced service not found: "{ns}/{name}"',
                        path,
                    )
                elif _service_waypoint(ctx, service) is None:
                    ctx.report(
                        msg.INEFFECTIVE_POLICY,
                        obj,
                        f"The policy has no impact: Service {ns}/{name} uses no waypoint "
                        f"({LABEL_USE_WAYPOINT}), and only waypoints enforce targetRefs",
                        path,
                    )


# --- security policies --------------------------------------------------------------------------


def _selector(obj: Resource) -> Mapping[str, str] | None:
    if isinstance(obj, Telemetry):
        return obj.spec.selector.match_labels if obj.spec.selector else None
    if isinstance(obj, RequestAuthentication):
        return obj.spec.selector.match_labels if obj.spec.selector else None
    spec = getattr(obj, "spec", None)
    if isinstance(spec, FrozenMap):
        selector = spec.get("selector")
        if isinstance(selector, Mapping):
            labels = selector.get("matchLabels")
            return (
                {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
            )
    return None


SELECTING_KINDS = (
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
    "Telemetry",
)


def selectors(ctx: AnalysisContext) -> None:
    """A workload selector that matches no workload."""
    for obj in ctx.config:
        if obj.kind not in SELECTING_KINDS:
            continue
        labels = _selector(obj)
        if not labels:
            continue
        ns = obj.meta.namespace
        if not ctx.selected(ns, labels, any_namespace=ns == ROOT_NAMESPACE):
            ctx.report(
                msg.NO_MATCHING_WORKLOADS,
                obj,
                "No matching workloads for this resource with the following labels: "
                + labels_text(labels),
                "spec.selector.matchLabels",
            )


def ztunnel_authorization(ctx: AnalysisContext) -> None:
    """What ztunnel drops from an AuthorizationPolicy it enforces (no targetRefs)."""
    for policy in ctx.config.of_type(GenericResource):
        if policy.kind != "AuthorizationPolicy":
            continue
        try:
            result = translate_authorization_policy(
                policy.meta.name,
                policy.meta.namespace,
                _plain(policy.spec),
                dict(policy.meta.annotations),
            )
        except PolicyError:
            continue  # the loader refused it already
        if result.policy is None:
            continue  # targetRefs: a waypoint enforces it
        prefix = f"{policy.meta.namespace}/{policy.meta.name}: "
        for warning in result.warnings:
            ctx.report(msg.AMB_L7_POLICY_AT_ZTUNNEL, policy, warning.removeprefix(prefix))


def _mtls_mode(spec: Mapping[str, object]) -> str:
    mtls = spec.get("mtls")
    mode = mtls.get("mode") if isinstance(mtls, Mapping) else None
    return mode if isinstance(mode, str) else "UNSET"


def peer_authentication(ctx: AnalysisContext) -> None:
    """STRICT where unenrolled workloads exist (they speak plaintext), or selecting none enrolled."""
    outside = [w for w in ctx.workloads if not w.enrolled and not w.waypoint]
    for pa in ctx.config.of_type(GenericResource):
        if pa.kind != "PeerAuthentication" or _mtls_mode(pa.spec) != "STRICT":
            continue
        ns = pa.meta.namespace
        labels = _selector(pa)
        covered = (
            ctx.selected(ns, labels, any_namespace=ns == ROOT_NAMESPACE)
            if labels
            else [w for w in ctx.workloads if ns == ROOT_NAMESPACE or w.namespace == ns]
        )
        covered = [w for w in covered if not w.waypoint]
        if covered and not any(w.enrolled for w in covered):
            ctx.report(
                msg.INEFFECTIVE_POLICY,
                pa,
                "The policy has no impact: none of the workloads it covers is enrolled "
                f"({LABEL_DATAPLANE_MODE}=ambient), and only ztunnel enforces it",
            )
            continue
        clients = [w for w in outside if w.ref.namespace != ROOT_NAMESPACE]
        if covered and clients:
            names = ", ".join(_short(w.ref) for w in clients[:3])
            more = f" and {len(clients) - 3} more" if len(clients) > 3 else ""
            ctx.report(
                msg.AMB_STRICT_WITH_OUTSIDE_CLIENTS,
                pa,
                f"STRICT mTLS while {len(clients)} workload(s) are not in the mesh ({names}{more}): "
                "their plaintext connections to the workloads this policy covers are refused",
                "spec.mtls.mode",
            )


def _short(ref: Ref) -> str:
    return f"{ref.kind} {ref.namespace}/{ref.name}"


# --- services, versions, telemetry ------------------------------------------------------------


def service_ports(ctx: AnalysisContext) -> None:
    """Port names that do not declare a protocol the Istio way (``http``, ``grpc-web``...)."""
    for service in ctx.config.services():
        for i, port in enumerate(service.spec.ports):
            if port.app_protocol:
                continue
            prefix = port.name.split("-", 1)[0].lower()
            if port.name.lower() in PORT_PROTOCOLS or prefix in PORT_PROTOCOLS:
                continue
            ctx.report(
                msg.PORT_NAME_NOT_UNDER_CONVENTION,
                service,
                f"Port name {port.name or '(none)'} (port: {port.port}, targetPort: "
                f"{port.target_port}) doesn't follow the naming convention of Istio port "
                "(<protocol>[-<suffix>], or set appProtocol); the protocol is detected",
                f"spec.ports[{i}].name",
            )


def api_versions(ctx: AnalysisContext) -> None:
    """apiVersions that still load but are deprecated upstream."""
    for obj in ctx.config:
        version = getattr(obj, "api_version", "")
        newer = DEPRECATED_VERSIONS.get(version)
        if newer is not None:
            ctx.report(
                msg.DEPRECATED,
                obj,
                f"Deprecated: apiVersion {version} is deprecated; use {newer}",
                "apiVersion",
            )


def telemetries(ctx: AnalysisContext) -> None:
    """Ambiguous Telemetries, unknown providers, and Telemetries only ztunnel would see."""
    items = ctx.config.of_type(Telemetry)
    extension = {
        name.lower()
        for obj in ctx.config.by_kind("ConfigMap")
        if (mesh := getattr(obj, "mesh", None)) is not None
        for name in mesh.providers
    }
    namespace_wide: dict[str, list[Telemetry]] = {}
    by_workload: dict[Ref, list[Telemetry]] = {}
    for t in items:
        spec = t.spec
        if spec.selector is None and not spec.targets:
            namespace_wide.setdefault(t.meta.namespace, []).append(t)
        elif spec.selector is not None:
            selected = ctx.selected(t.meta.namespace, spec.selector.match_labels)
            for w in selected:
                by_workload.setdefault(w.ref, []).append(t)
            if selected and not any(w.waypoint for w in selected):
                ctx.report(
                    msg.INEFFECTIVE_POLICY,
                    t,
                    "The policy has no impact: it selects no waypoint, and ztunnel ignores "
                    "the Telemetry API (as Istio's does)",
                    "spec.selector",
                )
        providers = [
            p.name
            for entries in (spec.metrics, spec.access_logging, spec.tracing)
            for e in entries
            for p in e.providers
        ]
        unknown = sorted(
            {n for n in providers if n not in BUILTIN_PROVIDERS and n.lower() not in extension}
        )
        if unknown:
            ctx.report(
                msg.INVALID_TELEMETRY_PROVIDER,
                t,
                f"The Telemetry {t.meta.name} in namespace {t.meta.namespace!r} names providers "
                f"this mesh does not have ({', '.join(unknown)}: neither envoy, prometheus nor "
                "an opentelemetry extensionProvider of the mesh config); they are ignored",
            )
    for ns, group in sorted(namespace_wide.items()):
        if len(group) > 1:
            names = [t.meta.name for t in group]
            for t in group:
                ctx.report(
                    msg.MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR,
                    t,
                    f"The Telemetries {names} in namespace {ns!r} have no workload selector, "
                    "which can lead to undefined behavior",
                )
    for ref, group in sorted(by_workload.items()):
        if len(group) > 1:
            names = [t.meta.name for t in group]
            for t in group:
                ctx.report(
                    msg.CONFLICTING_TELEMETRY_SELECTORS,
                    t,
                    f"The Telemetries {names} in namespace {ref.namespace!r} select the same "
                    f"workload {ref.kind} {ref.name!r}, which can lead to undefined behavior",
                )


ANALYZERS: tuple[Analyzer, ...] = (
    api_versions,
    waypoint_bindings,
    target_refs,
    http_routes,
    route_kinds,
    virtual_services,
    faults_with_resilience,
    destination_rules,
    selectors,
    ztunnel_authorization,
    peer_authentication,
    service_ports,
    telemetries,
)
