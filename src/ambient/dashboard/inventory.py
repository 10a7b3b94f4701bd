"""What the dashboard tells about each workload: identity, pods, services, waypoint,
the policies that apply to it and the routes that send traffic to it.

Built from the ztunnels' config dumps (what the data plane was told: workloads with their
service account, node, protocol and waypoint; services with theirs) and from the mesh's
manifests (labels, policies, routes). Keyed as the graph keys nodes: ``namespace/name``
with the workload's name (a Deployment's pods are one workload, as Istio's
``destination_workload`` label names them).

Which policies apply, as Istio decides in ambient mode:

- AuthorizationPolicy, PeerAuthentication, RequestAuthentication in the root namespace
  (``istio-system``) without a selector: every workload; in a namespace without selector
  nor targetRefs: the workloads of that namespace (enforced by ztunnel);
- with ``selector.matchLabels``: the workloads whose labels include them (in the root
  namespace: of every namespace), enforced by ztunnel;
- with ``targetRef``/``targetRefs``: a Service's workloads (``kind: Service``) or a
  waypoint (``kind: Gateway``), enforced by the waypoint.

Routes: VirtualServices whose ``hosts`` name one of the workload's services (short names
are in the VirtualService's namespace), HTTPRoutes and GRPCRoutes whose ``parentRefs``
name one of its Services, DestinationRules whose ``host`` is one of them; each with a
one-line summary of its destinations and weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["ROOT_NAMESPACE", "build_inventory", "build_services"]

ROOT_NAMESPACE = "istio-system"
CLUSTER_DOMAIN = "cluster.local"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
POLICY_KINDS = ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _meta(manifest: Mapping[str, Any]) -> tuple[str, str]:
    meta = _dict(manifest.get("metadata"))
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _fqdn(host: str, namespace: str) -> str:
    return host if "." in host else f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"


def _workload_labels(
    manifests: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], dict[str, str]]:
    """Labels of each workload (a controller's pod template, a bare Pod, a waypoint)."""
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for m in manifests:
        key = _meta(m)
        kind = m.get("kind")
        spec = _dict(m.get("spec"))
        if kind == "Pod":
            labels.setdefault(key, dict(_dict(_dict(m.get("metadata")).get("labels"))))
        elif "template" in spec:
            template = _dict(_dict(spec["template"]).get("metadata"))
            labels[key] = dict(_dict(template.get("labels")))
        elif kind == "Gateway" and spec.get("gatewayClassName") == "istio-waypoint":
            infra = _dict(_dict(spec.get("infrastructure")).get("labels"))
            labels[key] = {**infra, GATEWAY_NAME_LABEL: key[1]}
    return labels


def _policy_scope(
    m: Mapping[str, Any],
    workload: Mapping[str, Any],
    labels: Mapping[str, str],
    services: set[tuple[str, str]],
) -> str | None:
    """``ztunnel``/``waypoint`` when policy ``m`` applies to ``workload``, else None."""
    namespace, _ = _meta(m)
    spec = _dict(m.get("spec"))
    refs = [_dict(r) for r in _list(spec.get("targetRefs"))]
    if spec.get("targetRef"):
        refs.append(_dict(spec["targetRef"]))
    if refs:
        for ref in refs:
            ref_ns = str(ref.get("namespace") or namespace)
            name = str(ref.get("name", ""))
            if ref.get("kind") == "Service" and (ref_ns, name) in services:
                return "waypoint"
            if (
                ref.get("kind") == "Gateway"
                and workload["namespace"] == ref_ns
                and labels.get(GATEWAY_NAME_LABEL) == name
            ):
                return "waypoint"
        return None
    if namespace != ROOT_NAMESPACE and namespace != workload["namespace"]:
        return None
    selector = _dict(_dict(spec.get("selector")).get("matchLabels"))
    if all(labels.get(k) == v for k, v in selector.items()):
        return "ztunnel"
    return None


def _destinations(rules: Sequence[Any], key: str, name_of: Any) -> str:
    parts = []
    for rule in rules:
        targets = [_dict(r) for r in _list(_dict(rule).get(key))]
        described = []
        for t in targets:
            text = name_of(t)
            if "weight" in t and len(targets) > 1:
                text += f" {t['weight']}%"
            described.append(text)
        if described:
            parts.append(", ".join(described))
    return "; ".join(parts)


def _vs_target(route: Mapping[str, Any]) -> str:
    destination = _dict(route.get("destination"))
    host = str(destination.get("host", "?")).split(".")[0]
    subset = destination.get("subset")
    return f"{host} {subset}" if subset else host


def _route_summary(m: Mapping[str, Any]) -> str:
    spec = _dict(m.get("spec"))
    kind = m.get("kind")
    if kind == "VirtualService":
        return _destinations(_list(spec.get("http")) + _list(spec.get("tcp")), "route", _vs_target)
    if kind == "DestinationRule":
        subsets = [str(_dict(s).get("name", "?")) for s in _list(spec.get("subsets"))]
        return "subsets " + ", ".join(subsets) if subsets else "traffic policy"
    return _destinations(_list(spec.get("rules")), "backendRefs", lambda r: str(r.get("name", "?")))


def _routes_to(m: Mapping[str, Any], hostnames: set[str], services: set[tuple[str, str]]) -> bool:
    namespace, _ = _meta(m)
    spec = _dict(m.get("spec"))
    kind = m.get("kind")
    if kind == "VirtualService":
        return any(_fqdn(str(h), namespace) in hostnames for h in _list(spec.get("hosts")))
    if kind == "DestinationRule":
        return _fqdn(str(spec.get("host", "")), namespace) in hostnames
    for ref in (_dict(r) for r in _list(spec.get("parentRefs"))):
        if (
            ref.get("kind") == "Service"
            and (
                str(ref.get("namespace") or namespace),
                str(ref.get("name", "")),
            )
            in services
        ):
            return True
    return False


def build_inventory(
    dumps: Sequence[Mapping[str, Any]], manifests: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``namespace/name`` → what the page shows of that workload (module docstring)."""
    services_by_key: dict[str, Mapping[str, Any]] = {}
    for dump in dumps:
        for svc in _list(dump.get("services")):
            services_by_key[f"{svc.get('namespace')}/{svc.get('hostname')}"] = svc
    pods: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for dump in dumps:
        for w in _list(dump.get("workloads")):
            node_id = f"{w.get('namespace')}/{w.get('workloadName') or w.get('name')}"
            pods[node_id][str(w.get("uid") or w.get("name"))] = w
    workload_labels = _workload_labels(manifests)
    policies = [m for m in manifests if m.get("kind") in POLICY_KINDS]
    routes = [
        m
        for m in manifests
        if m.get("kind") in ("VirtualService", "DestinationRule", "HTTPRoute", "GRPCRoute")
    ]
    inventory: dict[str, dict[str, Any]] = {}
    for node_id, members in sorted(pods.items()):
        first = next(iter(members.values()))
        namespace, name = str(first.get("namespace")), node_id.partition("/")[2]
        labels = workload_labels.get((namespace, name)) or next(
            (
                workload_labels[(namespace, str(w.get("name")))]
                for w in members.values()
                if (namespace, str(w.get("name"))) in workload_labels
            ),
            {},
        )  # a controller's template, else its pods' own (a cluster's Deployments are pods)
        service_keys = sorted({k for w in members.values() for k in _dict(w.get("services"))})
        svc_objects = [services_by_key[k] for k in service_keys if k in services_by_key]
        hostnames = {k.partition("/")[2] for k in service_keys}
        svc_refs = {(str(s.get("namespace")), str(s.get("name"))) for s in svc_objects}
        waypoints = {str(w["waypoint"]) for w in members.values() if w.get("waypoint")}
        waypoints |= {str(s["waypoint"]) for s in svc_objects if s.get("waypoint")}
        info: dict[str, Any] = {
            "namespace": namespace,
            "name": name,
            "app": first.get("canonicalName") or name,
            "versions": sorted({str(w.get("canonicalRevision") or "") for w in members.values()}),
            "identities": sorted(
                {
                    f"spiffe://{w.get('trustDomain') or CLUSTER_DOMAIN}/ns/{namespace}"
                    f"/sa/{w.get('serviceAccount') or 'default'}"
                    for w in members.values()
                }
            ),
            "pods": sorted(
                (
                    {
                        "name": w.get("name"),
                        "node": w.get("node"),
                        "ips": w.get("workloadIps") or [],
                        "status": w.get("status"),
                    }
                    for w in members.values()
                ),
                key=lambda p: str(p["name"]),
            ),
            "protocol": "/".join(sorted({str(w.get("protocol")) for w in members.values()})),
            "services": sorted(hostnames),
            "waypoint": ", ".join(sorted(waypoints)) or None,
            "policies": [],
            "routes": [],
        }
        if GATEWAY_NAME_LABEL in labels:
            info["kind"] = "waypoint"
        for m in policies:
            scope = _policy_scope(m, info, labels, svc_refs)
            if scope is not None:
                ns, pname = _meta(m)
                action = _dict(m.get("spec")).get("action") or (
                    "ALLOW" if m.get("kind") == "AuthorizationPolicy" else None
                )
                info["policies"].append(
                    {
                        "kind": m.get("kind"),
                        "name": f"{ns}/{pname}",
                        "action": action,
                        "enforced_by": scope,
                    }
                )
        for m in routes:
            if _routes_to(m, hostnames, svc_refs):
                ns, rname = _meta(m)
                info["routes"].append(
                    {"kind": m.get("kind"), "name": f"{ns}/{rname}", "summary": _route_summary(m)}
                )
        inventory[node_id] = info
    return inventory


def build_services(dumps: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each service the ztunnels know, by hostname: name, namespace, VIPs and waypoint."""
    services: dict[str, dict[str, Any]] = {}
    for dump in dumps:
        for svc in _list(dump.get("services")):
            hostname = str(svc.get("hostname") or "")
            if hostname and hostname not in services:
                services[hostname] = {
                    "id": hostname,
                    "name": str(svc.get("name") or hostname),
                    "namespace": str(svc.get("namespace") or ""),
                    "vips": [str(v) for v in _list(svc.get("vips"))],
                    "waypoint": svc.get("waypoint") or None,
                }
    return services
