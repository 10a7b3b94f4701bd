"""Istio ``DestinationRule``: types and schema (the router merges them per host:
``waypoint.routing.context.DestinationPolicy``).

The waypoint applies ``subsets`` (the labels an endpoint must carry) and
``trafficPolicy.loadBalancer``: ``simple`` ``ROUND_ROBIN`` (default),
``LEAST_REQUEST`` (``LEAST_CONN`` is its old name), ``RANDOM``, or
``consistentHash`` (``config.consistenthash``). Precedence for one backend,
most specific first: the subset's ``portLevelSettings`` for the port, the
subset's ``loadBalancer``, the rule's ``portLevelSettings``, the rule's
``loadBalancer``; the first of them that sets ``simple`` or ``consistentHash``
wins whole (they are one oneof in Istio's API).

``connectionPool`` and ``outlierDetection`` load as ``PoolPolicy`` /
``OutlierPolicy`` (applied by ``waypoint.resilience.pool`` / ``.outlier``) and merged as istiod merges a
subset's policy into the rule's (``MergeTrafficPolicy``): the rule's
port-level setting for the port replaces the rule-wide fields *all together*
(unset ones fall back to defaults: port-level settings do not inherit); a
subset's ``trafficPolicy`` then overrides field by field, and the subset's own
port-level setting again replaces all of them. A value of 0 for a
``connectionPool`` limit means "unset" (unlimited), as in Istio.
``consecutiveErrors`` (deprecated) counts gateway errors only, as Istio maps it.

Decisions:

- Parsed and ignored with a load warning: ``tls``, ``tunnel``, ``proxyProtocol``,
  ``connectionPool.tcp.tcpKeepalive`` / ``maxConnectionDuration`` /
  ``idleTimeout``, ``connectionPool.http.h2UpgradePolicy`` /
  ``useClientProtocol`` / ``maxConcurrentStreams`` (the waypoint speaks
  HTTP/1.1 upstream inside HBONE), ``loadBalancer.localityLbSetting`` /
  ``warmupDurationSecs``, ``simple: PASSTHROUGH`` (round robin is used),
  ``exportTo``. ``workloadSelector`` is refused (it scopes a rule to sidecars).
- Several rules for one host merge as Istio merges them: subsets are the
  union (the first definition of a name wins), the traffic policy comes from
  the first rule that has one. "First" is the rule in the service's own
  namespace, then by ``namespace/name`` (we have no creation timestamps).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ambient.config import rules
from ambient.config.consistenthash import CONSISTENT_HASH, ConsistentHash
from ambient.config.frozen import FrozenMap
from ambient.config.l7fields import GoDuration, Ignored
from ambient.config.meta import LABELS, PORT, resource_schema
from ambient.config.resources import ObjectMeta
from ambient.config.schema import (
    INVALID,
    Bool,
    Choice,
    FieldPath,
    Int,
    Invalid,
    ListOf,
    Node,
    Obj,
    Report,
    Str,
    req,
)

__all__ = [
    "DEFAULT_POOL",
    "DESTINATION_RULE",
    "UNLIMITED",
    "DestinationRule",
    "DestinationRuleSpec",
    "LoadBalancer",
    "LoadBalancerSetting",
    "OutlierPolicy",
    "PoolPolicy",
    "Subset",
    "TrafficPolicy",
]

UNLIMITED = 2**32 - 1  # Istio's default for every connectionPool limit


class LoadBalancer(enum.Enum):
    """DestinationRule ``trafficPolicy.loadBalancer.simple`` values the waypoint implements."""

    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """``connectionPool``, with Istio's defaults (``waypoint.resilience.pool``)."""

    max_connections: int = UNLIMITED
    max_pending: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_requests_per_connection: int = 0  # 0: unlimited
    max_retries: int = UNLIMITED
    idle_timeout: float | None = None  # None: the waypoint's default
    connect_timeout: float = 10.0


DEFAULT_POOL = PoolPolicy()


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """``outlierDetection``, with Istio's defaults (``waypoint.resilience.outlier``)."""

    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    interval: float = 10.0
    base_ejection: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int = 0
    split_local_origin: bool = False  # splitExternalLocalOriginErrors
    consecutive_local_origin: int = 5  # consecutiveLocalOriginFailures (with the split)
    error_codes: frozenset[int] = frozenset()  # outlierDetectionHttpErrorCodes (empty: 5xx)


LoadBalancerSetting = LoadBalancer | ConsistentHash


_IGNORED_POLICY = {
    "tls": "the waypoint always reaches backends over HBONE mutual TLS",
    "tunnel": "the waypoint always reaches backends over HBONE",
    "proxyProtocol": "the waypoint does not send PROXY protocol to backends",
}


@dataclass(frozen=True)
class PortLoadBalancer:
    """One ``portLevelSettings`` entry."""

    port: int
    load_balancer: LoadBalancerSetting | None = None
    connection_pool: PoolPolicy | None = None
    outlier_detection: OutlierPolicy | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    load_balancer: LoadBalancerSetting | None = None
    port_level_settings: tuple[PortLoadBalancer, ...] = ()
    connection_pool: PoolPolicy | None = None
    outlier_detection: OutlierPolicy | None = None

    def resilience(self, port: int) -> tuple[PoolPolicy | None, OutlierPolicy | None]:
        """connectionPool and outlierDetection for ``port``: a port-level entry replaces both."""
        for setting in self.port_level_settings:
            if setting.port == port:
                return setting.connection_pool, setting.outlier_detection
        return self.connection_pool, self.outlier_detection

    def for_port(self, port: int) -> LoadBalancerSetting | None:
        """The policy for ``port``: its port-level setting, else the rule-wide one."""
        for setting in self.port_level_settings:
            if setting.port == port and setting.load_balancer is not None:
                return setting.load_balancer
        return self.load_balancer


@dataclass(frozen=True)
class Subset:
    name: str
    labels: FrozenMap[str, str] = field(default_factory=FrozenMap)
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True)
class DestinationRuleSpec:
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: object = None


@dataclass(frozen=True)
class DestinationRule:
    meta: ObjectMeta
    api_version: str
    spec: DestinationRuleSpec
    kind: str = field(default="DestinationRule", init=False)


# --- schema ------------------------------------------------------------------------------


class _Simple(Node["LoadBalancer | None"]):
    """``loadBalancer.simple``."""

    expected = "a string"
    _CHOICES = Choice(
        "UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "PASSTHROUGH"
    )

    def parse(self, value: object, at: FieldPath, report: Report) -> LoadBalancer | Invalid | None:
        choice = self._CHOICES.parse(value, at, report)
        if choice is INVALID:
            return INVALID
        if choice == "PASSTHROUGH":
            report.warn(
                at, "accepted but not applied: the waypoint balances PASSTHROUGH round robin"
            )
            return LoadBalancer.ROUND_ROBIN
        if choice == "UNSPECIFIED":
            return None
        return LoadBalancer.LEAST_REQUEST if choice == "LEAST_CONN" else LoadBalancer(choice)


@dataclass(frozen=True, slots=True)
class _Choice:
    simple: LoadBalancer | None
    consistent_hash: ConsistentHash | None
    both: bool

    @property
    def setting(self) -> LoadBalancerSetting | None:
        return self.consistent_hash or self.simple


def _load_balancer(
    simple: LoadBalancer | None = None,
    consistent_hash: ConsistentHash | None = None,
    **_ignored: object,
) -> _Choice:
    return _Choice(simple, consistent_hash, simple is not None and consistent_hash is not None)


def _check_load_balancer(choice: _Choice, at: FieldPath, report: Report) -> None:
    if choice.both:
        report.error(at, "only one of simple or consistentHash may be set")


_LOAD_BALANCER = Obj(
    _load_balancer,
    {
        "simple": _Simple(),
        "consistentHash": CONSISTENT_HASH,
        "localityLbSetting": Ignored("there is a single locality here"),
        "warmupDurationSecs": Ignored("slow start is not implemented by the waypoint"),
        "warmup": Ignored("slow start is not implemented by the waypoint"),
        "backendUtilization": Ignored("backends report no ORCA load here"),
    },
    checks=[_check_load_balancer],
)


def _limit(value: int | None) -> int:
    """A connectionPool limit: 0 or unset means Istio's default (unlimited)."""
    return value if value else UNLIMITED


def _pool(
    tcp: dict[str, object] | None = None, http: dict[str, object] | None = None
) -> PoolPolicy:
    tcp, http = tcp or {}, http or {}

    def get(section: dict[str, object], key: str) -> int | None:
        value = section.get(key)
        return value if isinstance(value, int) else None

    idle = http.get("idle_timeout")
    connect = tcp.get("connect_timeout")
    return PoolPolicy(
        max_connections=_limit(get(tcp, "max_connections")),
        max_pending=_limit(get(http, "http1_max_pending_requests")),
        max_requests=_limit(get(http, "http2_max_requests")),
        max_requests_per_connection=get(http, "max_requests_per_connection") or 0,
        max_retries=_limit(get(http, "max_retries")),
        idle_timeout=idle if isinstance(idle, float) and idle > 0 else None,
        connect_timeout=connect if isinstance(connect, float) and connect > 0 else 10.0,
    )


def _section(**fields: object) -> dict[str, object]:
    return fields


_WAYPOINT_H1 = "the waypoint speaks HTTP/1.1 to backends inside HBONE"
_CONNECTION_POOL = Obj(
    _pool,
    {
        "tcp": Obj(
            _section,
            {
                "maxConnections": Int(0),
                "connectTimeout": GoDuration(allow_zero=False),
                "tcpKeepalive": Ignored("HBONE keeps its connections alive with HTTP/2 PING"),
                "maxConnectionDuration": Ignored("upstream connections have no maximum age"),
                "idleTimeout": Ignored("use http.idleTimeout"),
            },
        ),
        "http": Obj(
            _section,
            {
                "http1MaxPendingRequests": Int(0),
                "http2MaxRequests": Int(0),
                "maxRequestsPerConnection": Int(0),
                "maxRetries": Int(0),
                "idleTimeout": GoDuration(),
                "h2UpgradePolicy": Ignored(_WAYPOINT_H1),
                "useClientProtocol": Ignored(_WAYPOINT_H1),
                "maxConcurrentStreams": Ignored(_WAYPOINT_H1),
            },
        ),
    },
)


def _outlier(
    consecutive_errors: int | None = None,
    consecutive5xx_errors: int | None = None,
    consecutive_gateway_errors: int | None = None,
    interval: float | None = None,
    base_ejection_time: float | None = None,
    max_ejection_percent: int | None = None,
    min_health_percent: int | None = None,
    split_external_local_origin_errors: bool = False,
    consecutive_local_origin_failures: int | None = None,
    outlier_detection_http_error_codes: tuple[int, ...] = (),
    **_ignored: object,
) -> OutlierPolicy:
    defaults = OutlierPolicy()
    five, gateway = defaults.consecutive_5xx, defaults.consecutive_gateway
    if consecutive_errors:  # deprecated: Istio maps it to gateway errors only
        five, gateway = 0, consecutive_errors
    if consecutive5xx_errors is not None:
        five = consecutive5xx_errors
    if consecutive_gateway_errors is not None:
        gateway = consecutive_gateway_errors
    return OutlierPolicy(
        consecutive_5xx=five,
        consecutive_gateway=gateway,
        interval=interval or defaults.interval,
        base_ejection=base_ejection_time or defaults.base_ejection,
        max_ejection_percent=(
            defaults.max_ejection_percent if max_ejection_percent is None else max_ejection_percent
        ),
        min_health_percent=min_health_percent or 0,
        split_local_origin=split_external_local_origin_errors,
        consecutive_local_origin=(
            defaults.consecutive_local_origin
            if consecutive_local_origin_failures is None
            else consecutive_local_origin_failures
        ),
        error_codes=frozenset(outlier_detection_http_error_codes),
    )


_OUTLIER = Obj(
    _outlier,
    {
        "consecutiveErrors": Int(0),
        "consecutive5xxErrors": Int(0),
        "consecutiveGatewayErrors": Int(0),
        "interval": GoDuration(allow_zero=False),
        "baseEjectionTime": GoDuration(allow_zero=False),
        "maxEjectionPercent": Int(0, 100),
        "minHealthPercent": Int(0, 100),
        "splitExternalLocalOriginErrors": Bool(),
        "consecutiveLocalOriginFailures": Int(0, 2**32 - 1),
        "outlierDetectionHttpErrorCodes": ListOf(Int(100, 599)),
        "failurePercentageThreshold": Ignored(
            "failure-percentage ejection is not implemented by the waypoint (consecutive "
            "errors are)"
        ),
    },
)


def _port_settings(
    port: int,
    load_balancer: _Choice | None = None,
    connection_pool: PoolPolicy | None = None,
    outlier_detection: OutlierPolicy | None = None,
    **_ignored: object,
) -> PortLoadBalancer:
    setting = load_balancer.setting if load_balancer else None
    return PortLoadBalancer(port, setting, connection_pool, outlier_detection)


def _port_number(number: int) -> int:
    return number


_PORT_LEVEL = Obj(
    _port_settings,
    {
        "port": req(Obj(_port_number, {"number": req(PORT)})),
        "loadBalancer": _LOAD_BALANCER,
        "connectionPool": _CONNECTION_POOL,
        "outlierDetection": _OUTLIER,
        **{key: Ignored(reason) for key, reason in _IGNORED_POLICY.items()},
    },
)


def _traffic_policy(
    load_balancer: _Choice | None = None,
    port_level_settings: tuple[PortLoadBalancer, ...] = (),
    connection_pool: PoolPolicy | None = None,
    outlier_detection: OutlierPolicy | None = None,
    **_ignored: object,
) -> TrafficPolicy:
    setting = load_balancer.setting if load_balancer else None
    return TrafficPolicy(setting, port_level_settings, connection_pool, outlier_detection)


_TRAFFIC_POLICY = Obj(
    _traffic_policy,
    {
        "loadBalancer": _LOAD_BALANCER,
        "portLevelSettings": ListOf(_PORT_LEVEL),
        "connectionPool": _CONNECTION_POOL,
        "outlierDetection": _OUTLIER,
        **{key: Ignored(reason) for key, reason in _IGNORED_POLICY.items()},
    },
)
_SUBSET = Obj(
    Subset,
    {
        "name": req(Str(rules.dns1123_label)),
        "labels": LABELS,
        "trafficPolicy": _TRAFFIC_POLICY,
    },
)
DESTINATION_RULE_SPEC = Obj(
    DestinationRuleSpec,
    {
        "host": req(Str(rules.hostname)),
        "trafficPolicy": _TRAFFIC_POLICY,
        "subsets": ListOf(_SUBSET, unique=["name"]),
        "exportTo": Ignored("every object is visible mesh-wide here"),
    },
    unsupported={"workloadSelector": "it scopes a DestinationRule to sidecars; not at a waypoint"},
)
DESTINATION_RULE = resource_schema(DestinationRule, DESTINATION_RULE_SPEC, spec_required=True)
