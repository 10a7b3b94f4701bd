"""L4 authorization at the destination's ztunnel: the pushed policies, evaluated per connection.

What is decided on is an :class:`InboundConnection` (the caller's identity and
address, the destination workload, address and port); the answer is a
:class:`Verdict`. Every handler that admits a connection asks an
:data:`Authorizer` (``authorize`` under the pushed policies, unless a test
injects its own), and ``ztunnel.connections`` asks it again on every push.

Istio's order (``ambient.authz``): a matching DENY denies; with no ALLOW policy
the connection is allowed; a matching ALLOW allows; anything else is denied.
PeerAuthentication STRICT refuses connections without a peer identity. AUDIT
and dry-run policies never decide; their matches are logged.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ambient import authz
from ambient.state.proxy import ProxyState
from ambient.state.workload import Workload

__all__ = ["Authorizer", "InboundConnection", "Verdict", "authorize"]

log = logging.getLogger("ambient.ztunnel")


@dataclass(frozen=True, slots=True)
class InboundConnection:
    """What L4 authorization decides on."""

    source_identity: str | None  # spiffe://... or None for plaintext
    source_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    destination: Workload
    destination_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    destination_port: int


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str = ""


Authorizer = Callable[[InboundConnection], Verdict]


def authorize(state: ProxyState, conn: InboundConnection) -> Verdict:
    """The verdict on ``conn`` under the policies ``state`` holds."""
    destination = conn.destination
    workload = authz.Workload(destination.namespace, destination.labels)
    connection = authz.Connection(
        conn.source_identity,
        conn.source_ip if conn.source_ip is not None else conn.destination_ip,
        conn.destination_ip,
        conn.destination_port,
    )
    decision = authz.decide(state.policies, workload, connection)
    if decision.audit_matches:
        log.info(
            "AUDIT policy matched conn=%s(%s)->%s:%d: %s",
            conn.source_ip,
            conn.source_identity or "no identity",
            conn.destination_ip,
            conn.destination_port,
            ", ".join(decision.audit_matches),
        )
    if decision.dry_run_matches:
        log.info(
            "dry-run policy matched conn=%s(%s)->%s:%d: %s (would be %s)",
            conn.source_ip,
            conn.source_identity or "no identity",
            conn.destination_ip,
            conn.destination_port,
            ", ".join(decision.dry_run_matches),
            "allowed" if decision.dry_run_allowed else "denied",
        )
    return Verdict(decision.allowed, decision.reason)
