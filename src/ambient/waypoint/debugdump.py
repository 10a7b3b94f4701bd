"""What a waypoint compiled, in Envoy's terms, for ``ambient proxy-config``: listeners,
routes, clusters and their endpoints (pure: reads the waypoint's live objects).

Names follow what Istio's waypoint (Envoy) shows istioctl, so an operator finds their
way: a route configuration per service port ``inbound-vip|PORT|http|HOST``, virtual
host ``inbound|http|PORT``, domains ``*``; a cluster per backend
``outbound|PORT|SUBSET|HOST`` (type EDS), its endpoints with their health
(``HEALTHY`` when the workload is healthy, ``UNHEALTHY`` otherwise) and outlier check
(``FAILED`` while outlier detection has it ejected, else ``OK``). A route's VIRTUAL
SERVICE is the object it came from as ``name.namespace`` (an HTTPRoute or GRPCRoute
too), ``default`` for a service port with nothing attached. Matches as istioctl
describes them (``/*``, ``/api*``, ``PathPrefix:/api``, ``regex ...``), with method,
header and query conditions appended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ambient.config.destinationrule import DestinationRule
from ambient.ipparse import address_text
from ambient.state.workload import WorkloadStatus
from ambient.waypoint.model import Backend, RouteDecision
from ambient.waypoint.routing.action import RouteAction
from ambient.waypoint.routing.match import Matcher, Op, PathKind, StringTest

if TYPE_CHECKING:
    from ambient.config.configset import ConfigSet
    from ambient.waypoint.proxy.server import Waypoint

__all__ = ["proxy_config"]

# a service port's declared protocol, as a listener match reads (unknown: sniffed)
_PROTOCOLS = {"HTTP11": "HTTP", "UNKNOWN": "sniffed"}


def _test(name: str, test: StringTest) -> str:
    op = {Op.EXACT: "=", Op.PREFIX: "^=", Op.REGEX: "~=", Op.PRESENT: ""}[test.op]
    text = f"{name}{op}{test.value}" if test.op is not Op.PRESENT else name
    return f"!{text}" if test.invert else text


def describe_match(matcher: Matcher) -> str:
    path = {
        PathKind.ANY: "/*",
        PathKind.EXACT: matcher.path,
        PathKind.SEGMENT_PREFIX: f"PathPrefix:{matcher.path or '/'}",
        PathKind.STRING_PREFIX: f"{matcher.path}*",
        PathKind.REGEX: f"regex {matcher.path_pattern.pattern if matcher.path_pattern else ''}",
    }[matcher.path_kind]
    extra = []
    if matcher.method is not None:
        extra.append(_test("method", matcher.method))
    extra += [_test(f"header:{n}", t) for n, t in matcher.headers]
    extra += [_test(f"query:{n}", t) for n, t in matcher.query]
    if matcher.authority is not None:
        extra.append(_test("authority", matcher.authority))
    return " ".join([path, *extra])


def cluster_name(backend: Backend) -> str:
    return f"outbound|{backend.port}|{backend.subset or ''}|{backend.hostname}"


def _managed_by(route: str) -> str:
    namespace, _, name = route.partition("/")
    return f"{name}.{namespace}" if name else route


def _route(action: RouteAction, matcher: Matcher | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": action.route,
        "match": describe_match(matcher) if matcher is not None else "/*",
        "virtualService": _managed_by(action.route),
        "backends": [
            {
                "cluster": cluster_name(b.backend) if b.backend else None,
                "weight": b.weight,
                **({"error": f"{b.error_status} {b.error_reason}"} if b.backend is None else {}),
            }
            for b in action.backends
        ],
    }
    if action.timeout is not None:
        out["timeout"] = f"{action.timeout:g}s"
    if action.retry is not None:
        retry = action.retry
        out["retries"] = {"attempts": retry.retries, "retryOn": ",".join(sorted(retry.retry_on))}
    if action.fault is not None:
        out["fault"] = repr(action.fault)
    if action.redirect is not None:
        out["redirect"] = True
    if action.response is not None:
        out["directResponse"] = action.response.status
    return out


def _default_route(decision: RouteDecision) -> dict[str, Any]:
    backend = decision.backend
    return {
        "name": decision.route,
        "match": "/*",
        "virtualService": "default",
        "backends": [{"cluster": cluster_name(backend), "weight": 100}] if backend else [],
    }


def _destination_rule(config: ConfigSet, backend: Backend, domain: str) -> str:
    for rule in config.by_kind("DestinationRule"):
        if not isinstance(rule, DestinationRule):
            continue
        host = rule.spec.host
        if "." not in host:
            host = f"{host}.{rule.meta.namespace}.svc.{domain}"
        if host == backend.hostname:
            return f"{rule.meta.name}.{rule.meta.namespace}"
    return "-"


def _cluster(waypoint: Waypoint, backend: Backend, config: ConfigSet) -> dict[str, Any]:
    state = waypoint.state
    runtime = waypoint.forwarder.clusters.peek(backend)
    detector = runtime.detector if runtime is not None else None
    service = state.services.get(backend.service_key)
    endpoints = []
    for workload in state.endpoints(service) if service is not None else ():
        if not workload.addresses or not backend.selects(workload.labels):
            continue
        port = state.workload_port(service, workload, backend.port) if service else None
        if port is None:
            continue
        ip = workload.addresses[0]
        address = address_text(ip, port)
        ejected = detector is not None and detector.is_ejected((ip, port))
        endpoints.append(
            {
                "address": address,
                "workload": f"{workload.name}.{workload.namespace}",
                "health": "HEALTHY" if workload.status is WorkloadStatus.HEALTHY else "UNHEALTHY",
                "outlierCheck": "FAILED" if ejected else "OK",
            }
        )
    pool = backend.pool
    out: dict[str, Any] = {
        "name": cluster_name(backend),
        "serviceFqdn": backend.hostname,
        "port": backend.port,
        "subset": backend.subset or "-",
        "direction": "outbound",
        "type": "EDS",
        "destinationRule": _destination_rule(
            config, backend, waypoint.hostname.split(".svc.", 1)[-1]
        ),
        "loadBalancer": backend.load_balancer.name,
        "circuitBreakers": {
            "maxConnections": pool.max_connections,
            "maxPendingRequests": pool.max_pending,
            "maxRequests": pool.max_requests,
            "maxRetries": pool.max_retries,
        },
        "endpoints": endpoints,
    }
    if runtime is not None:
        limits = runtime.limits
        out["circuitBreakers"]["requests"] = limits.requests
        out["circuitBreakers"]["inProgress"] = limits.in_progress
        out["circuitBreakers"]["retries"] = limits.retries
    if backend.outlier is not None:
        out["outlierDetection"] = {
            "consecutive5xxErrors": backend.outlier.consecutive_5xx,
            "interval": f"{backend.outlier.interval:g}s",
            "baseEjectionTime": f"{backend.outlier.base_ejection:g}s",
            "maxEjectionPercent": backend.outlier.max_ejection_percent,
            "ejected": sum(1 for e in endpoints if e["outlierCheck"] == "FAILED"),
        }
    return out


def proxy_config(waypoint: Waypoint, config: ConfigSet) -> dict[str, Any]:
    """Listeners, routes and clusters of ``waypoint`` (``config``: its L7 objects)."""
    router = waypoint.policies.router
    table = router.current() if hasattr(router, "current") else router
    described = table.describe() if hasattr(table, "describe") else []
    routes, backends = [], {}
    listeners: list[dict[str, Any]] = [
        {"address": f"{h}:{p}", "port": p, "protocol": "HBONE", "destination": "waypoint"}
        for h, p in waypoint.hbone_addresses
    ]
    for hostname, port, entries, default in described:
        service = waypoint.state.services.get(f"{hostname.split('.')[1]}/{hostname}")
        if service is None or not waypoint.bound_here(service.waypoint):
            continue
        name = f"inbound-vip|{port}|http|{hostname}"
        if entries:
            rules = [_route(entry.action, entry.matcher) for entry in entries]
            for entry in entries:
                for weighted in entry.action.backends:
                    if weighted.backend is not None:
                        backends[weighted.backend.cluster] = weighted.backend
        else:
            rules = [_default_route(default)]
            if default.backend is not None:
                backends[default.backend.cluster] = default.backend
        routes.append(
            {"name": name, "virtualHost": f"inbound|http|{port}", "domains": ["*"], "routes": rules}
        )
        declared = next((p.app_protocol.name for p in service.ports if p.service_port == port), "")
        protocol = _PROTOCOLS.get(declared, declared or "UNKNOWN")
        for vip in service.addresses:
            listeners.append(
                {
                    "address": f"{vip}:{port}",
                    "port": port,
                    "protocol": protocol,
                    "destination": f"Route: {name}",
                }
            )
    clusters = [_cluster(waypoint, b, config) for _, b in sorted(backends.items(), key=str)]
    return {
        "waypoint": f"{waypoint.namespace}/{waypoint.name}",
        "listeners": listeners,
        "routes": routes,
        "clusters": clusters,
    }
