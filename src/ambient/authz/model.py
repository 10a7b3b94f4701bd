"""The translated L4 authorization form ztunnel enforces.

Mirrors the workload API's ``istio.security.Authorization`` message
(istio/istio ``pkg/workloadapi/security/authorization.proto``) so a policy can be
serialized to xDS unchanged:

- an ``Authorization`` matches when ANY of its ``groups`` matches (one group per
  AuthorizationPolicy rule);
- a ``Group`` matches when ALL of its ``rules`` match (one ``Rules`` per to/from
  clause and one per ``when`` condition);
- a ``Rules`` matches when ANY of its ``matches`` matches;
- a ``Match`` matches when every non-empty field matches (values of one field are
  ORed, ``not_*`` fields must match none). An entirely empty ``Match`` never
  matches: ztunnel skips it (``rbac.rs``: ``if mg.is_empty() { continue }``).

Two local additions never go on the wire: ``Action.AUDIT`` (istiod does not send
AUDIT policies to ztunnel) and ``selector`` (istiod resolves selectors itself).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "Action",
    "Authorization",
    "Group",
    "IPNetwork",
    "Labels",
    "Match",
    "MatchKind",
    "Rules",
    "Scope",
    "ServiceAccountMatch",
    "StringMatch",
    "labels_key",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = tuple[tuple[str, str], ...]


def labels_key(labels: Mapping[str, str]) -> Labels:
    """Canonical hashable form of a label mapping (sorted pairs)."""
    return tuple(sorted(labels.items()))


class Scope(enum.Enum):
    """Which workloads a policy applies to (xDS ``istio.security.Scope``)."""

    GLOBAL = "GLOBAL"
    NAMESPACE = "NAMESPACE"
    WORKLOAD_SELECTOR = "WORKLOAD_SELECTOR"


class Action(enum.Enum):
    """What a matching policy does. AUDIT is local only: it is logged, never decides."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"


class MatchKind(enum.Enum):
    """The four string match forms of Istio policies."""

    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Exact ``abc``, prefix ``abc*``, suffix ``*abc`` or presence ``*`` match."""

    kind: MatchKind
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind is MatchKind.PRESENCE:
            if self.value:
                raise ValueError("a presence match carries no value")
        elif not self.value:
            raise ValueError(f"a {self.kind.value} match needs a non-empty value")

    @classmethod
    def parse(cls, pattern: str) -> StringMatch:
        """Istio's mapping of a policy string: ``*`` presence, ``*x`` suffix, ``x*`` prefix."""
        if pattern == "*":
            return cls(MatchKind.PRESENCE)
        if pattern.startswith("*"):
            return cls(MatchKind.SUFFIX, pattern[1:])
        if pattern.endswith("*"):
            return cls(MatchKind.PREFIX, pattern[:-1])
        return cls(MatchKind.EXACT, pattern)

    def matches(self, value: str) -> bool:
        """Whether ``value`` matches; presence needs a non-empty value."""
        if self.kind is MatchKind.EXACT:
            return value == self.value
        if self.kind is MatchKind.PREFIX:
            return value.startswith(self.value)
        if self.kind is MatchKind.SUFFIX:
            return value.endswith(self.value)
        return value != ""

    def __str__(self) -> str:
        if self.kind is MatchKind.PRESENCE:
            return "*"
        if self.kind is MatchKind.PREFIX:
            return f"{self.value}*"
        if self.kind is MatchKind.SUFFIX:
            return f"*{self.value}"
        return self.value


@dataclass(frozen=True, slots=True)
class ServiceAccountMatch:
    """A Kubernetes service account; the trust domain is not compared (as ztunnel)."""

    namespace: str
    service_account: str


@dataclass(frozen=True, slots=True)
class Match:
    """One ANDed set of conditions; values within a field are ORed."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    service_accounts: tuple[ServiceAccountMatch, ...] = ()
    not_service_accounts: tuple[ServiceAccountMatch, ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[IPNetwork, ...] = ()
    not_source_ips: tuple[IPNetwork, ...] = ()
    destination_ips: tuple[IPNetwork, ...] = ()
    not_destination_ips: tuple[IPNetwork, ...] = ()
    destination_ports: tuple[int, ...] = ()
    not_destination_ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for port in (*self.destination_ports, *self.not_destination_ports):
            if isinstance(port, bool) or not 0 <= port <= 65535:
                raise ValueError(f"destination port {port!r} is not in 0..65535")

    @property
    def is_empty(self) -> bool:
        """True when no field is set: ztunnel then skips this match (never matches)."""
        return not (
            self.namespaces
            or self.not_namespaces
            or self.service_accounts
            or self.not_service_accounts
            or self.principals
            or self.not_principals
            or self.source_ips
            or self.not_source_ips
            or self.destination_ips
            or self.not_destination_ips
            or self.destination_ports
            or self.not_destination_ports
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """A clause: matches when any of ``matches`` matches (an empty clause always does)."""

    matches: tuple[Match, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    """One AuthorizationPolicy rule: matches when all ``rules`` match (none: always)."""

    rules: tuple[Rules, ...] = ()


@dataclass(frozen=True, slots=True)
class Authorization:
    """A translated policy; matches when any group matches (no groups: never)."""

    name: str
    namespace: str
    scope: Scope
    action: Action
    groups: tuple[Group, ...] = ()
    dry_run: bool = False
    selector: Labels | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.namespace:
            raise ValueError("an Authorization needs a name and a namespace")
        if (self.scope is Scope.WORKLOAD_SELECTOR) != (self.selector is not None):
            raise ValueError(
                f"{self.key}: a selector is required for scope WORKLOAD_SELECTOR and "
                "only allowed there"
            )

    @property
    def key(self) -> str:
        """``namespace/name``, the name used in logs and decisions."""
        return f"{self.namespace}/{self.name}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether the selector (if any) is a subset of ``labels``."""
        if self.selector is None:
            return True
        return all(labels.get(k) == v for k, v in self.selector)
