"""Who called: the source address an inbound tunnel is judged and presented as.

An HBONE ``CONNECT`` may carry ``forwarded: for=<ip:port>`` naming the
connection's original client. That address is what ``ipBlocks`` judge, what
ztunnel binds to when it connects to the application (so the application sees
its caller), and what a PROXY header carries. It is the client's word, so it
is believed only when the authenticated peer may speak for that address:

- the address is the peer's own TCP address (only its port is news), or the
  address of a workload of the peer's identity (a ztunnel tunnels with its
  pod's certificate, and says which pod of that identity called);
- or the peer is a waypoint the destination uses (the pod's own waypoint, or
  one of a Service it backs): the destination chose that proxy, and it relays
  other workloads' connections by design.

Otherwise the claim is ignored and the tunnel is judged and presented as its
TCP peer (with the peer's identity, which the certificate proves).

Istio's ztunnel (``src/proxy/inbound.rs``) never believes ``forwarded`` for
the source: RBAC, the original-source bind and the PROXY header all use the
HBONE connection's TCP peer, and only ``host=`` is read from ``forwarded``.
That is as safe, but a connection that came through a waypoint then shows the
waypoint's address to ``ipBlocks`` and to the application. Believing only the
peers above keeps Istio's guarantee (no client chooses an address it may not
speak for) and still lets a waypoint pass its caller on.
"""

from __future__ import annotations

from ambient.hbone.messages import SocketAddress
from ambient.state.proxy import ProxyState
from ambient.state.workload import GatewayAddress, Workload


def caller_address(
    state: ProxyState,
    peer_identity: str,
    peer: SocketAddress,
    forwarded: SocketAddress | None,
    destination: Workload,
) -> SocketAddress:
    """The source of a tunnel from ``peer`` (its TCP address) to ``destination``."""
    if forwarded is None:
        return peer
    if forwarded.ip == peer.ip:
        return forwarded
    claimed = state.workload_by_ip(forwarded.ip)
    if claimed is not None and str(claimed.identity) == peer_identity:
        return forwarded
    if any(state.is_waypoint_identity(g, peer_identity) for g in waypoints_of(state, destination)):
        return forwarded
    return peer


def waypoints_of(state: ProxyState, workload: Workload) -> list[GatewayAddress]:
    """The waypoints ``workload`` is reached through: its own and its Services'."""
    found = [workload.waypoint] if workload.waypoint is not None else []
    for key in workload.services:
        service = state.services.get(key)
        if service is not None and service.waypoint is not None:
            found.append(service.waypoint)
    return found
