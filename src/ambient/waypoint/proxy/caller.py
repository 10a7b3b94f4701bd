"""Who called the waypoint: the address and identity its policy and access log see.

A tunnel's certificate proves the peer's identity; ``forwarded: for=`` names
the client the peer says it tunnels for. As at ztunnel's inbound
(``ambient.ztunnel.source``), that claim is believed only when the peer may
speak for the address:

- the address is a workload of the peer's identity (a ztunnel tunnels with its
  pod's certificate): that address, with the peer's identity;
- the peer relays for itself: its TCP address is a workload of its identity
  and the tunnel targets that workload (or a Service it backs). That is the
  destination's ztunnel hair-pinning plaintext from outside the mesh through
  the waypoint (``ambient.ztunnel.capture``): the caller's address is passed
  on, but with *no* identity, since the certificate is the destination's, not
  the caller's; so the outside caller never passes for the destination's
  service account or namespace in a policy (fail closed);
- anything else is ignored: the tunnel is judged as its TCP peer, with the
  identity its certificate proves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ambient.hbone.messages import SocketAddress
from ambient.identity.spiffe import SpiffeId
from ambient.state.proxy import ProxyState
from ambient.state.workload import Workload


@dataclass(frozen=True, slots=True)
class Caller:
    address: SocketAddress
    identity: SpiffeId | None
    workload: Workload | None  # the workload at ``address``, if the mesh knows it


def caller_of(
    state: ProxyState,
    peer_identity: SpiffeId,
    peer: SocketAddress,
    forwarded: SocketAddress | None,
    authority: SocketAddress,
) -> Caller:
    """The caller of a tunnel from ``peer`` (TCP address) to ``authority``."""
    at_peer = state.workload_by_ip(peer.ip)
    if forwarded is None or forwarded.ip == peer.ip:
        return Caller(forwarded or peer, peer_identity, at_peer)
    claimed = state.workload_by_ip(forwarded.ip)
    if claimed is not None and claimed.identity == peer_identity:
        return Caller(forwarded, peer_identity, claimed)
    if (
        at_peer is not None
        and at_peer.identity == peer_identity
        and _targets(state, authority, at_peer)
    ):
        return Caller(forwarded, None, claimed)
    return Caller(peer, peer_identity, at_peer)


def _targets(state: ProxyState, authority: SocketAddress, workload: Workload) -> bool:
    """Whether ``authority`` is ``workload``'s own address or a VIP of a Service it backs."""
    if authority.ip in workload.addresses:
        return True
    service = state.service_by_vip(authority.ip)
    return service is not None and any(w.uid == workload.uid for w in state.endpoints(service))
