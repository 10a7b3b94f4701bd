"""What every part of one ztunnel reads, in one bundle (ztunnel's ``ProxyInputs``).

``Ztunnel`` builds one :class:`ProxyInputs` and hands it to every listener
and handler it makes (outbound, inbound, captured plaintext, in-pod): the
pushed state, the metrics, the HBONE connection pool, certificates, L4
authorization and the tracker of open connections that policy may close.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ambient.hbone.admission import PendingHandshakes
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.protocol import HboneSettings
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId
from ambient.state.proxy import ProxyState
from ambient.ztunnel.authorization import Authorizer
from ambient.ztunnel.connections import ConnectionTracker
from ambient.ztunnel.metrics import Metrics

__all__ = ["CertificateSource", "ProxyInputs"]

CertificateSource = Callable[[SpiffeId], Awaitable[WorkloadCertificate]]


@dataclass(frozen=True, slots=True)
class ProxyInputs:
    node: str
    state: ProxyState
    metrics: Metrics
    pool: ConnectionPool  # HBONE connections to other ztunnels and waypoints
    settings: HboneSettings
    certificate: CertificateSource  # a workload's certificate, fetched if needed
    current_certificate: Callable[[SpiffeId], WorkloadCertificate]  # after ``certificate``
    authorizer: Callable[[], Authorizer]  # the L4 decision under the current policies
    connections: ConnectionTracker
    handshakes: PendingHandshakes  # HBONE connections in their TLS handshake, node-wide
