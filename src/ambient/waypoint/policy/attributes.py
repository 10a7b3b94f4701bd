"""The attributes an L7 policy reads, computed once per request (or per TCP connection).

Decisions, as Istio's waypoint (Envoy) with default settings:

- ``source.ip`` / ``ipBlocks`` is the downstream address the waypoint received
  with the HBONE tunnel (the client pod's address, not ztunnel's);
- ``remote.ip`` / ``remoteIpBlocks`` is the same address unless the waypoint is
  told to trust ``num_trusted_proxies`` proxies in front of it (Istio's
  ``gatewayTopology.numTrustedProxies``, default 0). Then it is the N-th address
  from the right of ``X-Forwarded-For`` (if there are that many). With 0 the
  header is ignored: any client could write it;
- ``host`` is the ``:authority`` (or ``Host``) lower-cased; ``host_no_port`` the
  same without ``:port``;
- ``connection.sni`` is always empty: the waypoint terminates HBONE, and the
  tunnelled stream carries no TLS server name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ambient.identity.spiffe import SpiffeId
from ambient.state.workload import IPAddress
from ambient.waypoint.model import Downstream, RequestHead, RequestPrincipal, Target
from ambient.waypoint.policy.paths import PathNormalization, normalize_path

__all__ = ["RequestAttributes", "connection_attributes", "request_attributes", "strip_port"]


@dataclass(slots=True)
class RequestAttributes:
    """What policy rules match against; ``request`` is None for TCP connections."""

    peer: SpiffeId | None
    principal: str | None  # the peer identity without ``spiffe://``
    source_ip: IPAddress
    remote_ip: IPAddress
    destination_ip: IPAddress
    destination_port: int
    request: RequestHead | None = None
    method: str = ""
    host: str = ""
    host_no_port: str = ""
    path: str = ""
    jwt: RequestPrincipal | None = None


def strip_port(authority: str) -> str:
    """``host:port`` -> ``host``; ``[::1]:80`` -> ``[::1]``; no port: unchanged."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else authority
    host, colon, port = authority.rpartition(":")
    return host if colon and port.isascii() and port.isdigit() else authority


def _principal(peer: SpiffeId | None) -> str | None:
    if peer is None:
        return None
    return f"{peer.trust_domain}/ns/{peer.namespace}/sa/{peer.service_account}"


def _remote_ip(request: RequestHead, source_ip: IPAddress, trusted: int) -> IPAddress:
    if trusted <= 0:
        return source_ip
    header = request.header("x-forwarded-for")
    if not header:
        return source_ip
    hops = [hop.strip() for hop in header.split(",")]
    if len(hops) < trusted:
        return source_ip
    try:
        return ipaddress.ip_address(hops[-trusted])
    except ValueError:
        return source_ip


def connection_attributes(target: Target, downstream: Downstream) -> RequestAttributes:
    """Attributes of a TCP connection (no HTTP fields)."""
    return RequestAttributes(
        peer=downstream.peer_identity,
        principal=_principal(downstream.peer_identity),
        source_ip=downstream.source_ip,
        remote_ip=downstream.source_ip,
        destination_ip=target.address,
        destination_port=target.port,
    )


def request_attributes(
    target: Target,
    downstream: Downstream,
    request: RequestHead,
    jwt: RequestPrincipal | None,
    *,
    normalization: PathNormalization = PathNormalization.BASE,
    num_trusted_proxies: int = 0,
) -> RequestAttributes:
    """Attributes of an HTTP request."""
    host = request.authority.lower()
    return RequestAttributes(
        peer=downstream.peer_identity,
        principal=_principal(downstream.peer_identity),
        source_ip=downstream.source_ip,
        remote_ip=_remote_ip(request, downstream.source_ip, num_trusted_proxies),
        destination_ip=target.address,
        destination_port=target.port,
        request=request,
        method=request.method,
        host=host,
        host_no_port=strip_port(host),
        path=normalize_path(request.path_only.split("#", 1)[0], normalization),
        jwt=jwt,
    )
