"""Inputs and output of an L4 decision: connection, destination workload, verdict."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ambient.authz.model import Action, Authorization, Labels, labels_key

__all__ = [
    "NO_ALLOW_MATCHED",
    "NO_ALLOW_POLICY",
    "SPIFFE_PREFIX",
    "Connection",
    "Decision",
    "IPAddress",
    "Workload",
    "parse_spiffe_id",
    "policy_decision",
    "strict_decision",
]

SPIFFE_PREFIX = "spiffe://"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_spiffe_id(identity: str) -> tuple[str, str, str]:
    """Split ``spiffe://<td>/ns/<ns>/sa/<sa>`` into (trust domain, namespace, sa)."""
    if not identity.startswith(SPIFFE_PREFIX):
        raise ValueError(f"source_identity {identity!r} does not start with {SPIFFE_PREFIX!r}")
    parts = identity[len(SPIFFE_PREFIX) :].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        raise ValueError(
            f"source_identity {identity!r} is not of the form "
            "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        )
    return parts[0], parts[2], parts[4]


def _canonical(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 addresses compare as IPv4 (as ztunnel's canonical socket addrs)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True, slots=True)
class Connection:
    """An inbound connection as ztunnel sees it after the (optional) mTLS handshake.

    ``source_identity`` is the peer's full SPIFFE id, or None for plaintext.
    """

    source_identity: str | None
    source_ip: IPAddress
    destination_ip: IPAddress
    destination_port: int
    principal: str | None = field(init=False, repr=False, compare=False)
    source_namespace: str | None = field(init=False, repr=False, compare=False)
    service_account: tuple[str, str] | None = field(init=False, repr=False, compare=False)
    src_net: tuple[int, int] = field(init=False, repr=False, compare=False)
    dst_net: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        port = self.destination_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"destination_port {port!r} is not in 0..65535")
        src, dst = _canonical(self.source_ip), _canonical(self.destination_ip)
        object.__setattr__(self, "source_ip", src)
        object.__setattr__(self, "destination_ip", dst)
        object.__setattr__(self, "src_net", (src.version, int(src)))
        object.__setattr__(self, "dst_net", (dst.version, int(dst)))
        if self.source_identity is None:
            principal = ns = None
            sa: tuple[str, str] | None = None
        else:
            _, ns, name = parse_spiffe_id(self.source_identity)
            principal = self.source_identity[len(SPIFFE_PREFIX) :]
            sa = (ns, name)
        object.__setattr__(self, "principal", principal)
        object.__setattr__(self, "source_namespace", ns)
        object.__setattr__(self, "service_account", sa)

    @classmethod
    def of(cls, identity: str | None, source_ip: str, destination_ip: str, port: int) -> Connection:
        """Build from strings, e.g. ``Connection.of(None, "10.0.0.1", "10.0.0.2", 80)``."""
        return cls(
            identity, ipaddress.ip_address(source_ip), ipaddress.ip_address(destination_ip), port
        )


@dataclass(frozen=True, slots=True)
class Workload:
    """The destination workload: where policies are selected from."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    key: tuple[str, Labels] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.namespace:
            raise ValueError("a Workload needs a namespace")
        frozen = MappingProxyType(dict(self.labels))
        object.__setattr__(self, "labels", frozen)
        object.__setattr__(self, "key", (self.namespace, labels_key(frozen)))


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one connection, with what the log line needs.

    ``policy`` is the ``namespace/name`` that decided (None when no policy did);
    ``audit_matches`` and ``dry_run_matches`` list policies that matched but never
    decide; ``dry_run_allowed`` is the verdict had dry-run policies been enforced
    (None when no dry-run policy applies).
    """

    allowed: bool
    policy: str | None
    reason: str
    audit_matches: tuple[str, ...] = ()
    dry_run_matches: tuple[str, ...] = ()
    dry_run_allowed: bool | None = None


NO_ALLOW_POLICY = Decision(True, None, "no ALLOW policy applies")
NO_ALLOW_MATCHED = Decision(False, None, "no ALLOW policy matched")


def policy_decision(policy: Authorization) -> Decision:
    """The verdict of an enforced ALLOW or DENY ``policy`` that matched."""
    allowed = policy.action is Action.ALLOW
    verb = "allowed" if allowed else "denied"
    return Decision(allowed, policy.key, f"{verb} by {policy.action.value} policy {policy.key}")


def strict_decision(policy: str | None) -> Decision:
    """Plaintext refused by PeerAuthentication STRICT (istiod's synthetic DENY).

    Like every reason, it names no per-connection value: verdicts are memoized.
    """
    return Decision(False, policy, "plaintext refused: PeerAuthentication mTLS STRICT")
