"""The messages ``ambient analyze`` prints: Istio's codes where Istio has one, ``AMB0xxx`` otherwise.

Codes, names and levels follow istioctl analyze's catalogue
(``pkg/config/analysis/msg/messages.yaml`` in istio/istio); the texts are ours.
Checks Istio has no analyzer for (ambient-specific ones) use the ``AMB`` range,
so a reader never mistakes them for an istioctl code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ambient.config.configset import Origin, Ref

__all__ = [
    "AMB_FAULT_WITH_RETRIES_OR_TIMEOUT",
    "AMB_L7_POLICY_AT_ZTUNNEL",
    "AMB_NAMESPACE_NOT_ENROLLED",
    "AMB_ROUTE_KINDS_CONFLICT",
    "AMB_STRICT_WITH_OUTSIDE_CLIENTS",
    "AMB_WAYPOINT_FOR_MISMATCH",
    "CONFLICTING_MESH_VS_HOSTS",
    "CONFLICTING_TELEMETRY_SELECTORS",
    "DEPRECATED",
    "INEFFECTIVE_POLICY",
    "INVALID_TELEMETRY_PROVIDER",
    "MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR",
    "NO_MATCHING_WORKLOADS",
    "PORT_NAME_NOT_UNDER_CONVENTION",
    "REFERENCED_RESOURCE_NOT_FOUND",
    "SCHEMA_VALIDATION_ERROR",
    "SCHEMA_WARNING",
    "Level",
    "Message",
    "MessageType",
]


class Level(enum.IntEnum):
    """Severity, ordered so ``>=`` compares with ``--failure-threshold``."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    @property
    def title(self) -> str:
        return self.name.capitalize()


@dataclass(frozen=True)
class MessageType:
    code: str
    name: str
    level: Level


DEPRECATED = MessageType("IST0002", "Deprecated", Level.WARNING)
REFERENCED_RESOURCE_NOT_FOUND = MessageType("IST0101", "ReferencedResourceNotFound", Level.ERROR)
SCHEMA_VALIDATION_ERROR = MessageType("IST0106", "SchemaValidationError", Level.ERROR)
CONFLICTING_MESH_VS_HOSTS = MessageType(
    "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Level.ERROR
)
PORT_NAME_NOT_UNDER_CONVENTION = MessageType(
    "IST0118", "PortNameIsNotUnderNamingConvention", Level.INFO
)
NO_MATCHING_WORKLOADS = MessageType("IST0127", "NoMatchingWorkloadsFound", Level.WARNING)
SCHEMA_WARNING = MessageType("IST0133", "SchemaWarning", Level.WARNING)
INVALID_TELEMETRY_PROVIDER = MessageType("IST0157", "InvalidTelemetryProvider", Level.WARNING)
CONFLICTING_TELEMETRY_SELECTORS = MessageType(
    "IST0159", "ConflictingTelemetryWorkloadSelectors", Level.ERROR
)
MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR = MessageType(
    "IST0160", "MultipleTelemetriesWithoutWorkloadSelectors", Level.ERROR
)
INEFFECTIVE_POLICY = MessageType("IST0167", "IneffectivePolicy", Level.WARNING)

AMB_WAYPOINT_FOR_MISMATCH = MessageType("AMB0001", "WaypointTrafficTypeMismatch", Level.WARNING)
AMB_NAMESPACE_NOT_ENROLLED = MessageType("AMB0002", "WaypointBoundNotEnrolled", Level.WARNING)
AMB_L7_POLICY_AT_ZTUNNEL = MessageType("AMB0003", "L7PolicyEnforcedByZtunnel", Level.WARNING)
AMB_STRICT_WITH_OUTSIDE_CLIENTS = MessageType(
    "AMB0004", "StrictMTLSWithUnenrolledWorkloads", Level.WARNING
)
AMB_ROUTE_KINDS_CONFLICT = MessageType("AMB0005", "HTTPRouteAndGRPCRouteConflict", Level.WARNING)
AMB_FAULT_WITH_RETRIES_OR_TIMEOUT = MessageType(
    "AMB0006", "FaultInjectionWithRetriesOrTimeout", Level.WARNING
)


@dataclass(frozen=True)
class Message:
    """One finding about one object (``ref`` None: about the whole configuration)."""

    type: MessageType
    text: str
    ref: Ref | None = None
    origin: Origin | None = None
    path: str = ""

    @property
    def level(self) -> Level:
        return self.type.level

    @property
    def resource(self) -> str:
        """``VirtualService reviews.default`` (istioctl's ``Kind name.namespace``)."""
        if self.ref is None:
            return ""
        if self.ref.namespace:
            return f"{self.ref.kind} {self.ref.name}.{self.ref.namespace}"
        return f"{self.ref.kind} {self.ref.name}"

    @property
    def location(self) -> str:
        """``file:line`` (or ``file:document`` when the line is unknown), or ``""``."""
        if self.origin is None:
            return ""
        if self.origin.line is not None:
            return f"{self.origin.file}:{self.origin.line}"
        return f"{self.origin.file}:{self.origin.document}"

    def __str__(self) -> str:
        where = " ".join(p for p in (self.resource, self.location) if p)
        head = f"{self.level.title} [{self.type.code}]"
        text = f"{self.path}: {self.text}" if self.path else self.text
        return f"{head} ({where}) {text}" if where else f"{head} {text}"

    def to_dict(self) -> dict[str, object]:
        """As ``istioctl analyze -o json`` shapes a message (plus ``path``)."""
        return {
            "code": self.type.code,
            "name": self.type.name,
            "level": self.level.title,
            "message": self.text,
            "origin": self.resource,
            "reference": self.location,
            "path": self.path,
        }
