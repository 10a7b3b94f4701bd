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

:class:`MemoizedAuthorizer` (what a ztunnel asks) remembers verdicts per (caller
identity, caller IP, destination workload, destination address, port): a verdict
depends on nothing else but the policies. The memo is emptied whenever the state
takes a push (``ProxyState.version``: workloads, services or policies) or the
policy store changes by any other path (``PolicyStore.revision``), and a hit must
name the very destination object the verdict was computed for. A verdict that
AUDIT or dry-run policies matched is never kept, so each such connection still
gets its log line.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ambient import authz
from ambient.state.proxy import ProxyState
from ambient.state.workload import Workload

__all__ = ["Authorizer", "InboundConnection", "MemoizedAuthorizer", "Verdict", "authorize"]

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
    return _decide(state, conn)[0]


MEMO_LIMIT = 4096  # verdicts kept (per ztunnel); emptied when full


class MemoizedAuthorizer:
    """``authorize`` under ``state``'s policies, remembered (see the module docstring)."""

    def __init__(self, state: ProxyState, limit: int = MEMO_LIMIT) -> None:
        self.state = state
        self.limit = limit
        self._memo: dict[_Key, tuple[Workload, Verdict]] = {}
        self._valid_for = (-1, -1)

    def __call__(self, conn: InboundConnection) -> Verdict:
        state = self.state
        valid_for = (state.version, state.policies.revision)
        memo = self._memo
        if valid_for != self._valid_for:
            memo.clear()
            self._valid_for = valid_for
        destination = conn.destination
        key = (
            conn.source_identity,
            conn.source_ip,
            destination.uid,
            conn.destination_ip,
            conn.destination_port,
        )
        found = memo.get(key)
        if found is not None and found[0] is destination:
            return found[1]
        verdict, observed = _decide(state, conn)
        if not observed:
            if len(memo) >= self.limit:
                memo.clear()
            memo[key] = (destination, verdict)
        return verdict

    def __len__(self) -> int:
        return len(self._memo)


_Key = tuple[
    str | None,
    ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    str,
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    int,
]


def _decide(state: ProxyState, conn: InboundConnection) -> tuple[Verdict, bool]:
    """The verdict, and whether AUDIT or dry-run policies matched (and were logged)."""
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
    observed = bool(decision.audit_matches or decision.dry_run_matches)
    return Verdict(decision.allowed, decision.reason), observed
