"""Gateway API ``Gateway``: strict schema (``gateway.networking.k8s.io/v1``).

The mesh runs Gateways of class ``istio-waypoint`` as waypoints (see
``ambient.controlplane.waypoints``). Other classes load (the YAML is valid
Gateway API) but nothing runs them: the loader warns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ambient.config import rules
from ambient.config.frozen import FrozenMap
from ambient.config.meta import LABELS, PORT, resource_schema
from ambient.config.resources import Labels, ObjectMeta
from ambient.config.schema import (
    AnyMapping,
    Choice,
    FieldPath,
    ListOf,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "GATEWAY",
    "WAYPOINT_CLASS",
    "Gateway",
    "GatewayInfrastructure",
    "GatewayListener",
    "GatewaySpec",
]

WAYPOINT_CLASS = "istio-waypoint"

_PROTOCOLS = ("HBONE", "HTTP", "HTTPS", "TCP", "TLS", "UDP")


@dataclass(frozen=True)
class GatewayListener:
    """``spec.listeners[]``: a waypoint has one ``HBONE`` listener on 15008."""

    name: str
    port: int
    protocol: str
    hostname: str | None = None
    allowed_routes: FrozenMap[str, object] = field(default_factory=FrozenMap)
    tls: FrozenMap[str, object] = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class GatewayInfrastructure:
    """``spec.infrastructure``: labels and annotations copied onto the generated workload."""

    labels: Labels = field(default_factory=FrozenMap)
    annotations: Labels = field(default_factory=FrozenMap)
    parameters_ref: FrozenMap[str, object] = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class GatewaySpec:
    gateway_class_name: str
    listeners: tuple[GatewayListener, ...]
    addresses: tuple[FrozenMap[str, object], ...] = ()
    infrastructure: GatewayInfrastructure = field(default_factory=GatewayInfrastructure)


@dataclass(frozen=True)
class Gateway:
    """A Gateway; ``gatewayClassName: istio-waypoint`` makes it a waypoint."""

    meta: ObjectMeta
    spec: GatewaySpec
    api_version: str = "gateway.networking.k8s.io/v1"
    kind: str = field(default="Gateway", init=False)

    @property
    def is_waypoint(self) -> bool:
        return self.spec.gateway_class_name == WAYPOINT_CLASS


LISTENER = Obj(
    GatewayListener,
    {
        "name": req(Str(rules.dns1123_subdomain)),
        "port": req(PORT),
        "protocol": req(Choice(*_PROTOCOLS)),
        "hostname": Str(rules.hostname),
        "allowedRoutes": AnyMapping(),
        "tls": AnyMapping(),
    },
)


def _check_spec(spec: GatewaySpec, at: FieldPath, report: Report) -> None:
    if spec.gateway_class_name != WAYPOINT_CLASS:
        return
    if not any(listener.protocol == "HBONE" for listener in spec.listeners):
        report.error(
            (*at, "listeners"),
            "a waypoint (gatewayClassName istio-waypoint) needs an HBONE listener "
            "(name: mesh, port: 15008, protocol: HBONE)",
        )
    for index, listener in enumerate(spec.listeners):
        if listener.protocol == "HBONE" and listener.port != 15008:
            report.error(
                (*at, "listeners", index, "port"),
                f"the HBONE listener of a waypoint must use port 15008, not {listener.port}",
            )


GATEWAY_SPEC = Obj(
    GatewaySpec,
    {
        "gatewayClassName": req(Str(rules.dns1123_subdomain)),
        "listeners": req(ListOf(LISTENER, non_empty=True, unique=["name"])),
        "addresses": ListOf(AnyMapping()),
        "infrastructure": Obj(
            GatewayInfrastructure,
            {"labels": LABELS, "annotations": LABELS, "parametersRef": AnyMapping()},
        ),
    },
    checks=[_check_spec],
)

GATEWAY = resource_schema(Gateway, GATEWAY_SPEC, spec_required=True)
