"""Schema tables for Istio's WorkloadEntry and ServiceEntry, with Istio's validation rules."""

from __future__ import annotations

from ambient.config import rules
from ambient.config.frozen import FrozenMap
from ambient.config.meta import (
    LABELS,
    PORT,
    resource_schema,
)
from ambient.config.resources import (
    ServiceEntry,
    ServiceEntryPort,
    ServiceEntrySpec,
    WorkloadEntry,
    WorkloadEntrySpec,
)
from ambient.config.schema import (
    Choice,
    FieldPath,
    Int,
    ListOf,
    MapKey,
    MapOf,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "ISTIO_PROTOCOLS",
    "SERVICE_ENTRY",
    "SERVICE_ENTRY_SPEC",
    "WORKLOAD_ENTRY",
    "WORKLOAD_ENTRY_SPEC",
]

WORKLOAD_ENTRY_SPEC = Obj(
    WorkloadEntrySpec,
    {
        "address": req(Str(rules.workload_address)),
        "ports": MapOf(PORT, rules.dns1123_label),
        "labels": LABELS,
        "network": Str(),
        "locality": Str(),
        "weight": Int(0, 2**32 - 1),
        "serviceAccount": Str(rules.dns1123_subdomain),
    },
)
WORKLOAD_ENTRY = resource_schema(WorkloadEntry, WORKLOAD_ENTRY_SPEC, spec_required=True)

ISTIO_PROTOCOLS = (
    "HTTP",
    "HTTPS",
    "HTTP2",
    "GRPC",
    "GRPC-Web",
    "HTTP_PROXY",
    "TCP",
    "TLS",
    "UDP",
    "Mongo",
    "Redis",
    "MySQL",
)
SERVICE_ENTRY_PORT = Obj(
    ServiceEntryPort,
    {
        "number": req(PORT),
        "protocol": req(Choice(*ISTIO_PROTOCOLS, ignore_case=True)),
        "name": req(Str(rules.dns1123_label)),
        "targetPort": PORT,
    },
)


def _selector_labels(labels: FrozenMap[str, str] | None = None) -> FrozenMap[str, str]:
    return labels or FrozenMap()


def _check_service_entry(spec: ServiceEntrySpec, at: FieldPath, report: Report) -> None:
    if spec.workload_selector is not None and spec.endpoints:
        report.error((*at, "workloadSelector"), "cannot be used together with spec.endpoints")
    if spec.resolution == "DNS" and not spec.endpoints:
        for index, host in enumerate(spec.hosts):
            if host.startswith("*"):
                report.error(
                    (*at, "hosts", index),
                    f"wildcard host {host!r} needs endpoints when resolution is DNS",
                )
    if spec.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        for index, address in enumerate(spec.addresses):
            if rules.ip_address(address):
                report.error(
                    (*at, "addresses", index),
                    f"CIDR {address!r} is not allowed when resolution is {spec.resolution}",
                )
    port_names = {p.name for p in spec.ports}
    for index, endpoint in enumerate(spec.endpoints):
        if (
            spec.resolution == "STATIC"
            and rules.ip_address(endpoint.address)
            and not endpoint.address.startswith("unix://")
        ):
            report.error(
                (*at, "endpoints", index, "address"),
                f"must be an IP address when resolution is STATIC, got {endpoint.address!r}",
            )
        for name in endpoint.ports:
            if name not in port_names:
                report.error(
                    (*at, "endpoints", index, "ports", MapKey(name)),
                    f"port {name!r} is not declared in spec.ports",
                )


SERVICE_ENTRY_SPEC = Obj(
    ServiceEntrySpec,
    {
        "hosts": req(ListOf(Str(rules.hostname), non_empty=True)),
        "addresses": ListOf(Str(rules.ip_or_cidr)),
        "ports": req(ListOf(SERVICE_ENTRY_PORT, non_empty=True, unique=["number", "name"])),
        "location": Choice("MESH_EXTERNAL", "MESH_INTERNAL"),
        "resolution": Choice("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"),
        "workloadSelector": Obj(_selector_labels, {"labels": LABELS}),
        "endpoints": ListOf(WORKLOAD_ENTRY_SPEC),
        "exportTo": ListOf(Str()),
        "subjectAltNames": ListOf(Str()),
    },
    checks=[_check_service_entry],
)
SERVICE_ENTRY = resource_schema(ServiceEntry, SERVICE_ENTRY_SPEC, spec_required=True)
