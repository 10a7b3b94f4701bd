"""The mesh's own listeners are never a destination, and a pod's SOCKS5 port serves only it.

A pod's address carries, besides the application's ports, ztunnel's listeners
for that pod: SOCKS5 outbound (15080), the HTTP CONNECT outbound (15081), the
in-pod captures (15001 outbound, 15006 inbound plaintext), HBONE (15008) and
DNS (15053); a node's or waypoint's address carries the admin, metrics and
readiness endpoints (15000, 15020, 15021). Reaching one of them *through* the
mesh turns ztunnel against its own pod: a tunnel to ``<podIP>:15080``, dialled
by the pod's ztunnel, lands on that pod's SOCKS5 listener, whose outbound then
speaks with the *pod's* certificate to any destination the caller names.

So, as Istio's ztunnel refuses its ``illegal_ports`` (a "self call"):

- inbound (HBONE, and the in-pod plaintext capture, hair-pinned or not)
  refuses a target port in :data:`MESH_PORTS` before anything is dialled;
  HBONE answers 400 (Istio answers 503; a target that is never served is
  a bad request, and a 400 is not retried on another endpoint);
- outbound refuses a destination that is a mesh port on a pod's address
  (:func:`mesh_listener_target`);
- a pod's SOCKS5 listener (local mode, no network namespaces) accepts a
  connection only from the pod's own address or from the host's default
  loopback source (:func:`socks_peer_allowed`). Every connection ztunnel or
  a waypoint opens is bound to some pod's or waypoint's address, so none of
  them can reach another pod's SOCKS5 port by any path. What this cannot stop
  is a process of the host: in local mode a pod's processes share the host's
  network, connect from ``127.0.0.1`` like every unbound local client, and
  any local process can do the same (or bind the pod's address, as loopback
  addresses are free for all). Only ``--netns`` separates pods; see
  ``docs/security.md``.
"""

from __future__ import annotations

import ipaddress

from ambient.state.workload import IPAddress, Workload, waypoint_of

SOCKS5 = 15080
HTTP_CONNECT = 15081
OUTBOUND_CAPTURE = 15001
INBOUND_CAPTURE = 15006
HBONE = 15008
DNS = 15053
ADMIN = 15000
METRICS = 15020
READINESS = 15021

MESH_PORTS = frozenset(
    (SOCKS5, HTTP_CONNECT, OUTBOUND_CAPTURE, INBOUND_CAPTURE, HBONE, DNS, ADMIN, METRICS, READINESS)
)
"""Ports of the mesh's own listeners: never a target of a tunnel or a captured connection."""

_DEFAULT_LOOPBACK_SOURCE = {
    4: ipaddress.IPv4Address("127.0.0.1"),
    6: ipaddress.IPv6Address("::1"),
}


def is_mesh_port(port: int) -> bool:
    """Whether ``port`` is one of the mesh's own listeners (see :data:`MESH_PORTS`)."""
    return port in MESH_PORTS


def mesh_listener_target(destination: Workload | None, port: int) -> bool:
    """Whether ``port`` on ``destination``'s address is one of ztunnel's own listeners.

    A waypoint's address is not ztunnel's (its 15008 wants mTLS, its 15020 metrics
    may be scraped), so only pods served by a ztunnel count."""
    return destination is not None and waypoint_of(destination) is None and is_mesh_port(port)


def socks_peer_allowed(pod_ip: IPAddress, peer_ip: IPAddress) -> bool:
    """Whether a connection from ``peer_ip`` may use the SOCKS5 port of the pod at ``pod_ip``.

    The pod's own address, or the address the kernel gives an unbound local client
    (``127.0.0.1`` / ``::1``: how a pod's processes arrive without network namespaces).
    Anything else — another pod's address, a node's, a waypoint's — is a connection
    the mesh itself relayed from somewhere else, and is refused."""
    if peer_ip == pod_ip:
        return True
    return peer_ip == _DEFAULT_LOOPBACK_SOURCE[peer_ip.version]
