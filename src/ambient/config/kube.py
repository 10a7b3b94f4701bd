"""Schema tables for Namespace, ServiceAccount and Service.

Decisions: ``Service.spec.type`` ClusterIP is the default; NodePort and
LoadBalancer load with a warning and behave as ClusterIP (no node port or
external load balancer exists locally); ExternalName is an error (use a
ServiceEntry). Fields with no local meaning (``sessionAffinity``,
``ipFamilies``, ``externalTrafficPolicy``...) are accepted and ignored.
"""

from __future__ import annotations

from ambient.config import rules
from ambient.config.frozen import FrozenMap
from ambient.config.meta import (
    LABELS,
    PORT,
    PORT_NAME,
    resource_schema,
)
from ambient.config.resources import (
    Namespace,
    Service,
    ServiceAccount,
    ServicePort,
    ServiceSpec,
)
from ambient.config.schema import (
    Choice,
    FieldPath,
    IntOrStr,
    ListOf,
    Obj,
    Report,
    Str,
    req,
)

__all__ = ["NAMESPACE", "SERVICE", "SERVICE_ACCOUNT", "SERVICE_PORT", "SERVICE_SPEC"]

# --- Namespace, ServiceAccount --------------------------------------------------------------

NAMESPACE = resource_schema(
    Namespace, None, namespaced=False, name_rule=rules.dns1123_label, ignore=["spec"]
)
SERVICE_ACCOUNT = resource_schema(
    ServiceAccount, None, ignore=["secrets", "imagePullSecrets", "automountServiceAccountToken"]
)

# --- Service --------------------------------------------------------------------------------


def _service_port(
    port: int,
    target_port: int | str | None = None,
    protocol: str = "TCP",
    name: str = "",
    app_protocol: str | None = None,
) -> ServicePort:
    return ServicePort(
        port, port if target_port is None else target_port, protocol, name, app_protocol
    )


SERVICE_PORT = Obj(
    _service_port,
    {
        "port": req(PORT),
        "targetPort": IntOrStr(PORT, PORT_NAME, "a port number or a container port name"),
        "protocol": Choice("TCP", "UDP", "SCTP"),
        "name": Str(rules.dns1123_label),
        "appProtocol": Str(),
    },
    ignore=["nodePort"],
)


def _check_service(spec: ServiceSpec, at: FieldPath, report: Report) -> None:
    if spec.type in ("NodePort", "LoadBalancer"):
        report.warn(
            (*at, "type"),
            f"{spec.type} is treated as ClusterIP: no node port or external load balancer "
            "is provisioned locally",
        )
    cluster_ip = spec.cluster_ip
    if cluster_ip is not None and cluster_ip != "None" and rules.ip_address(cluster_ip):
        report.error(
            (*at, "clusterIP"),
            f"invalid IP address {cluster_ip!r} (use 'None' for a headless Service)",
        )
    if not spec.ports and not spec.headless:
        report.error(
            (*at, "ports"), "missing required field (only a headless Service may have no ports)"
        )
    if len(spec.ports) > 1:
        for index, port in enumerate(spec.ports):
            if not port.name:
                report.error(
                    (*at, "ports", index, "name"), "required when a Service has more than one port"
                )
    seen: dict[tuple[int, str], int] = {}
    for index, port in enumerate(spec.ports):
        key = (port.port, port.protocol)
        if key in seen:
            report.error(
                (*at, "ports", index, "port"),
                f"duplicate port {port.port}/{port.protocol} (see ports[{seen[key]}])",
            )
        seen.setdefault(key, index)


def _service_type(value: str) -> str | None:
    if value in ("ClusterIP", "NodePort", "LoadBalancer"):
        return None
    if value == "ExternalName":
        return "ExternalName Services are not supported; use a ServiceEntry"
    return f"must be one of ClusterIP, NodePort, LoadBalancer, got {value!r}"


def _service_spec(
    ports: tuple[ServicePort, ...] = (),
    selector: FrozenMap[str, str] | None = None,
    cluster_ip: str = "",
    type: str = "ClusterIP",
) -> ServiceSpec:
    return ServiceSpec(ports, selector or FrozenMap(), cluster_ip or None, type)


SERVICE_SPEC = Obj(
    _service_spec,
    {
        "ports": ListOf(SERVICE_PORT, unique=["name"]),
        "selector": LABELS,
        "clusterIP": Str(),
        "type": Str(_service_type),
    },
    ignore=[
        "clusterIPs",
        "sessionAffinity",
        "sessionAffinityConfig",
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
        "externalTrafficPolicy",
        "publishNotReadyAddresses",
        "loadBalancerIP",
        "loadBalancerSourceRanges",
        "loadBalancerClass",
        "allocateLoadBalancerNodePorts",
        "healthCheckNodePort",
        "trafficDistribution",
    ],
    unsupported={
        "externalName": "ExternalName Services are not supported; use a ServiceEntry",
        "externalIPs": "external IPs are not provisioned locally",
    },
    checks=[_check_service],
)
SERVICE = resource_schema(Service, SERVICE_SPEC, name_rule=rules.dns1035_label, spec_required=True)
