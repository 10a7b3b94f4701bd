"""Istio ``DestinationRule``: types, schema, and the per-backend policy it gives the router.

The waypoint applies ``subsets`` (the labels an endpoint must carry) and
``trafficPolicy.loadBalancer.simple``: ``ROUND_ROBIN`` (default),
``LEAST_REQUEST`` (``LEAST_CONN`` is its old name), ``RANDOM``. Precedence for
one backend, most specific first: the subset's ``portLevelSettings`` for the
port, the subset's ``loadBalancer``, the rule's ``portLevelSettings``, the
rule's ``loadBalancer``.

Decisions:

- Parsed and ignored with a load warning: ``connectionPool``,
  ``outlierDetection``, ``tls``, ``tunnel``, ``proxyProtocol``,
  ``loadBalancer.consistentHash`` / ``localityLbSetting`` /
  ``warmupDurationSecs``, ``simple: PASSTHROUGH`` (round robin is used),
  ``exportTo``. ``workloadSelector`` is refused (it scopes a rule to sidecars).
- Several rules for one host merge as Istio merges them: subsets are the
  union (the first definition of a name wins), the traffic policy comes from
  the first rule that has one. "First" is the rule in the service's own
  namespace, then by ``namespace/name`` (we have no creation timestamps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ambient.config import rules
from ambient.config.frozen import FrozenMap
from ambient.config.meta import LABELS, PORT, resource_schema
from ambient.config.resources import ObjectMeta
from ambient.config.schema import (
    INVALID,
    Choice,
    FieldPath,
    Invalid,
    ListOf,
    Node,
    Obj,
    Report,
    Str,
    req,
)
from ambient.waypoint.model import LoadBalancer
from ambient.waypoint.routing.common import Ignored

__all__ = [
    "DESTINATION_RULE",
    "DestinationPolicy",
    "DestinationRule",
    "DestinationRuleSpec",
    "Subset",
    "TrafficPolicy",
]

_IGNORED_POLICY = {
    "connectionPool": "connection pool limits are not enforced by the waypoint yet",
    "outlierDetection": "outlier detection is not implemented by the waypoint yet",
    "tls": "the waypoint always reaches backends over HBONE mutual TLS",
    "tunnel": "the waypoint always reaches backends over HBONE",
    "proxyProtocol": "the waypoint does not send PROXY protocol to backends",
}


@dataclass(frozen=True)
class PortLoadBalancer:
    port: int
    load_balancer: LoadBalancer | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    load_balancer: LoadBalancer | None = None
    port_level_settings: tuple[PortLoadBalancer, ...] = ()

    def for_port(self, port: int) -> LoadBalancer | None:
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


@dataclass(frozen=True)
class DestinationPolicy:
    """The merged DestinationRules of one service host."""

    subsets: FrozenMap[str, Subset] = field(default_factory=FrozenMap)
    traffic_policy: TrafficPolicy | None = None

    @staticmethod
    def merge(rules_in_order: Iterable[DestinationRule]) -> DestinationPolicy:
        subsets: dict[str, Subset] = {}
        policy: TrafficPolicy | None = None
        for rule in rules_in_order:
            for subset in rule.spec.subsets:
                subsets.setdefault(subset.name, subset)
            if policy is None:
                policy = rule.spec.traffic_policy
        return DestinationPolicy(FrozenMap(subsets), policy)

    def load_balancer(self, port: int, subset: Subset | None = None) -> LoadBalancer:
        """The load-balancing policy for ``port`` (and ``subset``), most specific first."""
        for policy in (subset.traffic_policy if subset else None, self.traffic_policy):
            chosen = policy.for_port(port) if policy is not None else None
            if chosen is not None:
                return chosen
        return LoadBalancer.ROUND_ROBIN


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


def _simple(
    simple: LoadBalancer | None = None,
    consistent_hash: object = None,
    locality_lb_setting: object = None,
    warmup_duration_secs: object = None,
    warmup: object = None,
) -> LoadBalancer | None:
    return simple


_LOAD_BALANCER = Obj(
    _simple,
    {
        "simple": _Simple(),
        "consistentHash": Ignored("consistent hashing is not implemented by the waypoint"),
        "localityLbSetting": Ignored("there is a single locality here"),
        "warmupDurationSecs": Ignored("slow start is not implemented by the waypoint"),
        "warmup": Ignored("slow start is not implemented by the waypoint"),
    },
)


def _port_settings(
    port: int,
    load_balancer: LoadBalancer | None = None,
    **_ignored: object,
) -> PortLoadBalancer:
    return PortLoadBalancer(port, load_balancer)


def _port_number(number: int) -> int:
    return number


_PORT_LEVEL = Obj(
    _port_settings,
    {
        "port": req(Obj(_port_number, {"number": req(PORT)})),
        "loadBalancer": _LOAD_BALANCER,
        **{key: Ignored(reason) for key, reason in _IGNORED_POLICY.items()},
    },
)


def _traffic_policy(
    load_balancer: LoadBalancer | None = None,
    port_level_settings: tuple[PortLoadBalancer, ...] = (),
    **_ignored: object,
) -> TrafficPolicy:
    return TrafficPolicy(load_balancer, port_level_settings)


_TRAFFIC_POLICY = Obj(
    _traffic_policy,
    {
        "loadBalancer": _LOAD_BALANCER,
        "portLevelSettings": ListOf(_PORT_LEVEL),
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
