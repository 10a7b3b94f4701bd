"""L4 authorization at the destination's ztunnel: the pushed policies, evaluated per connection.

Istio's order (``ambient.authz``): a matching DENY denies; with no ALLOW policy
the connection is allowed; a matching ALLOW allows; anything else is denied.
PeerAuthentication STRICT refuses connections without a peer identity. AUDIT
and dry-run policies never decide; their matches are logged.
"""

from __future__ import annotations

import logging

from ambient import authz
from ambient.state.proxy import ProxyState
from ambient.ztunnel.inbound import InboundConnection, Verdict

log = logging.getLogger("ambient.ztunnel")


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
