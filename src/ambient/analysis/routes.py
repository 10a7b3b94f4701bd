"""The route analyzers of ``ambient analyze``: HTTPRoute and GRPCRoute references and
kinds, VirtualService hosts, subsets and faults, DestinationRule subsets.

Decisions:

- An HTTPRoute and a GRPCRoute attached to one Service port is AMB0005: the waypoint
  does not merge the two kinds, the one it applies wins (the first by namespace/name).
- A VirtualService HTTP route with ``fault`` and ``retries`` or ``timeout`` is AMB0006
  (istioctl has no analyzer for it; Istio's VirtualService reference says fault
  injection cannot be combined with retry or timeout configuration on the same
  route: Envoy's fault filter answers an injected abort before the router, so it is
  never retried, and an injected delay is spent before the route timeout starts).
  ``retries: {attempts: 0}`` is no retry configuration and is not reported.
"""

from __future__ import annotations

from ambient.analysis import messages as msg
from ambient.analysis.context import AnalysisContext, labels_text
from ambient.config.destinationrule import DestinationRule
from ambient.config.grpcroute import GRPCRoute
from ambient.config.httproute import HTTPRoute
from ambient.config.virtualservice import VirtualService

__all__ = [
    "destination_rules",
    "faults_with_resilience",
    "http_routes",
    "route_kinds",
    "virtual_services",
]


def http_routes(ctx: AnalysisContext) -> None:
    """HTTPRoute and GRPCRoute parentRefs and backendRefs naming objects that do not exist."""
    routes: list[HTTPRoute | GRPCRoute] = [*ctx.config.of_type(HTTPRoute)]
    routes += ctx.config.of_type(GRPCRoute)
    for route in routes:
        ns = route.meta.namespace
        for i, parent in enumerate(route.spec.parent_refs):
            pns = parent.namespace or ns
            if ctx.config.get(parent.kind, pns, parent.name) is None and parent.kind in (
                "Service",
                "Gateway",
            ):
                ctx.report(
                    msg.REFERENCED_RESOURCE_NOT_FOUND,
                    route,
                    f'Referenced {parent.kind.lower()} not found: "{pns}/{parent.name}"',
                    f"spec.parentRefs[{i}]",
                )
        refs = [rule.backend_refs for rule in route.spec.rules]
        for r, backend_refs in enumerate(refs):
            for b, backend in enumerate(backend_refs):
                bns = backend.namespace or ns
                if (
                    backend.kind == "Service"
                    and ctx.config.get("Service", bns, backend.name) is None
                ):
                    ctx.report(
                        msg.REFERENCED_RESOURCE_NOT_FOUND,
                        route,
                        f'Referenced service not found: "{bns}/{backend.name}"',
                        f"spec.rules[{r}].backendRefs[{b}]",
                    )


def route_kinds(ctx: AnalysisContext) -> None:
    """An HTTPRoute and a GRPCRoute on one Service port: they are not merged, one kind is
    ignored there (the waypoint applies the kind of the first route by namespace/name)."""
    attached: dict[tuple[str, str, int | None], list[HTTPRoute | GRPCRoute]] = {}
    routes: list[HTTPRoute | GRPCRoute] = [*ctx.config.of_type(HTTPRoute)]
    routes += ctx.config.of_type(GRPCRoute)
    for route in sorted(routes, key=lambda r: (r.meta.namespace, r.meta.name)):
        for parent in route.spec.parent_refs:
            if parent.is_service:
                key = (parent.namespace or route.meta.namespace, parent.name, parent.port)
                attached.setdefault(key, []).append(route)
    for (ns, name, port), found in sorted(attached.items(), key=lambda kv: str(kv[0])):
        kinds = {r.kind for r in found}
        if len(kinds) < 2:
            continue
        winner = found[0]
        where = f"Service {ns}/{name}" + (f" port {port}" if port is not None else "")
        for route in found:
            if route.kind != winner.kind:
                ctx.report(
                    msg.AMB_ROUTE_KINDS_CONFLICT,
                    route,
                    f"{winner.kind} {winner.meta.namespace}/{winner.meta.name} also attaches to "
                    f"{where}; HTTPRoutes and GRPCRoutes are not merged, so this "
                    f"{route.kind} is ignored there",
                    "spec.parentRefs",
                )


def _subsets(ctx: AnalysisContext) -> dict[str, set[str]]:
    """host FQDN -> the subset names DestinationRules define for it."""
    out: dict[str, set[str]] = {}
    for dr in ctx.config.of_type(DestinationRule):
        host = ctx.fqdn(dr.spec.host, dr.meta.namespace)
        out.setdefault(host, set()).update(s.name for s in dr.spec.subsets)
    return out


def virtual_services(ctx: AnalysisContext) -> None:
    """Hosts and destinations not found, subsets no DestinationRule defines, shared hosts."""
    subsets = _subsets(ctx)
    owners: dict[str, list[VirtualService]] = {}
    for vs in ctx.config.of_type(VirtualService):
        ns = vs.meta.namespace
        mesh_bound = not vs.spec.gateways or "mesh" in vs.spec.gateways
        for i, host in enumerate(vs.spec.hosts):
            fqdn = ctx.fqdn(host, ns)
            if mesh_bound:
                owners.setdefault(fqdn, []).append(vs)
            if not ctx.has_host(fqdn):
                ctx.report(
                    msg.REFERENCED_RESOURCE_NOT_FOUND,
                    vs,
                    f'Referenced host not found: "{host}"',
                    f"spec.hosts[{i}]",
                )
        for r, rule in enumerate(vs.spec.http):
            for d, route in enumerate(rule.route):
                dest = route.destination
                path = f"spec.http[{r}].route[{d}].destination"
                fqdn = ctx.fqdn(dest.host, ns)
                if not ctx.has_host(fqdn):
                    ctx.report(
                        msg.REFERENCED_RESOURCE_NOT_FOUND,
                        vs,
                        f'Referenced host not found: "{dest.host}"',
                        f"{path}.host",
                    )
                elif dest.subset and dest.subset not in subsets.get(fqdn, set()):
                    ctx.report(
                        msg.REFERENCED_RESOURCE_NOT_FOUND,
                        vs,
                        f"Referenced host+subset in destinationrule not found: "
                        f'"{dest.host}+{dest.subset}"',
                        f"{path}.subset",
                    )
    for host, services in sorted(owners.items()):
        if len(services) > 1:
            names = ",".join(f"{v.meta.namespace}/{v.meta.name}" for v in services)
            for vs in services:
                ctx.report(
                    msg.CONFLICTING_MESH_VS_HOSTS,
                    vs,
                    f"The VirtualServices {names} associated with mesh gateway define the same "
                    f"host {host}, which can lead to undefined behavior; merge them into one",
                )


def faults_with_resilience(ctx: AnalysisContext) -> None:
    """HTTP routes combining ``fault`` with ``retries`` or ``timeout`` (see the module docstring)."""
    for vs in ctx.config.of_type(VirtualService):
        for r, rule in enumerate(vs.spec.http):
            if rule.fault is None:
                continue
            retries = rule.retries is not None and rule.retries.attempts != 0
            fields = [n for n, on in (("retries", retries), ("timeout", rule.timeout)) if on]
            if fields:
                what = " and ".join(fields)
                ctx.report(
                    msg.AMB_FAULT_WITH_RETRIES_OR_TIMEOUT,
                    vs,
                    f"fault injection is combined with {what} on the same route, which Istio "
                    f"does not support: an injected abort is never retried and an injected "
                    f"delay does not count against the timeout; test {what} without the fault",
                    f"spec.http[{r}].fault",
                )


def destination_rules(ctx: AnalysisContext) -> None:
    """Subset labels that select none of the host's pods."""
    services = {
        f"{s.meta.name}.{s.meta.namespace}.svc.cluster.local": s for s in ctx.config.services()
    }
    for dr in ctx.config.of_type(DestinationRule):
        service = services.get(ctx.fqdn(dr.spec.host, dr.meta.namespace))
        if service is None:
            continue  # a ServiceEntry, or a host VirtualService analysis reports
        backing = [
            w
            for w in ctx.selected(service.meta.namespace, service.spec.selector)
            if service.spec.selector
        ]
        for i, subset in enumerate(dr.spec.subsets):
            if not any(
                all(w.labels.get(k) == v for k, v in subset.labels.items()) for w in backing
            ):
                ctx.report(
                    msg.NO_MATCHING_WORKLOADS,
                    dr,
                    f"No matching workloads for this resource with the following labels: "
                    f"{labels_text(subset.labels)} (subset {subset.name!r} of "
                    f"Service {service.meta.namespace}/{service.meta.name})",
                    f"spec.subsets[{i}].labels",
                )
