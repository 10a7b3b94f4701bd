"""What an outbound connection derives from its source pod and its upstream alone, kept per
(source, upstream) pair.

For every connection the outbound handler names the upstream's addresses (access log,
``zc connections``), both identities, the CONNECT's authority and the HBONE
destination, the identities the destination's certificate must show, and the address the
HBONE connection is bound to: a dozen small objects and strings, each built again per
connection. They depend on nothing but two immutable objects, the source ``Workload``
and the ``Upstream``, so they are kept per pair. An ``Upstream`` is matched by what it
holds (its workload and service objects, its address, port and waypoint flag), not by
identity: a connection to a pod's own address resolves to a new, equal ``Upstream`` each
time, and keyed by identity each one added a route that never hit (4,096 of them, ~2 MB,
before the memo emptied). A hit must name the very same ``Workload`` and ``Service``
objects: a pushed workload is a new object, and gets a new :class:`Route`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ambient.hbone.messages import HBONE_PORT, SocketAddress
from ambient.identity.spiffe import SpiffeId
from ambient.ipparse import address_text, ip_text
from ambient.state.proxy import Upstream
from ambient.state.workload import TunnelProtocol, Workload
from ambient.ztunnel.ids import identity_text

__all__ = ["Route", "Routes"]

ROUTES_KEPT = 4096


@dataclass(frozen=True, slots=True)
class Route:
    """One (source, upstream) pair's derived values (see the module docstring)."""

    source: Workload
    upstream: Upstream
    hbone: bool  # over HBONE (both ends in the mesh), else plain TCP
    dst_addr: str  # where the connection goes: the HBONE port, or the upstream itself
    hbone_addr: str | None  # the CONNECT authority as text
    source_identity: str | None
    destination_identity: str | None
    authority: SocketAddress  # the CONNECT's :authority
    destination: SocketAddress  # the HBONE connection's peer (tunnel address, 15008)
    expected: frozenset[SpiffeId]  # identities the destination's certificate may show
    forwarded_host: str | None  # the service's hostname, for ``forwarded: host=``
    source_ip: str  # the source pod's address, as text
    bind_ip: str | None  # the HBONE connection's source address (None: any)


class Routes:
    """The :class:`Route` of each pair, kept (bounded) for one outbound handler; ``bind``:
    HBONE connections are always bound to the pod's address (in-pod mode), else only to a
    loopback pod address (local mode)."""

    __slots__ = ("_kept", "bind")

    def __init__(self, *, bind: bool) -> None:
        self.bind = bind
        self._kept: dict[tuple[object, ...], Route] = {}

    def route(self, source: Workload, upstream: Upstream) -> Route:
        workload, service = upstream.workload, upstream.service
        key = (id(source), id(workload), upstream.ip, upstream.port, id(service),
               upstream.via_waypoint)  # fmt: skip
        found = self._kept.get(key)
        if (
            found is not None
            and found.source is source
            and found.upstream.workload is workload
            and found.upstream.service is service
        ):
            return found
        route = self._build(source, upstream)
        if len(self._kept) >= ROUTES_KEPT:
            self._kept.clear()
        self._kept[key] = route  # holds the objects: their ids are not reused meanwhile
        return route

    def __len__(self) -> int:
        return len(self._kept)

    def _build(self, source: Workload, upstream: Upstream) -> Route:
        hbone = source.tunnel_protocol is TunnelProtocol.HBONE and upstream.hbone
        destination = upstream.workload
        own = source.addresses[0]
        return Route(
            source=source,
            upstream=upstream,
            hbone=hbone,
            dst_addr=address_text(upstream.tunnel_ip, HBONE_PORT)
            if hbone
            else address_text(upstream.ip, upstream.port),
            hbone_addr=address_text(upstream.ip, upstream.port) if hbone else None,
            source_identity=identity_text(source) if hbone else None,
            destination_identity=identity_text(destination)
            if hbone and destination is not None
            else None,
            authority=SocketAddress(upstream.ip, upstream.port),
            destination=SocketAddress(upstream.tunnel_ip, HBONE_PORT),
            expected=frozenset([destination.identity]) if destination is not None else frozenset(),
            forwarded_host=upstream.service.hostname if upstream.service else None,
            source_ip=ip_text(own),
            bind_ip=ip_text(own) if self.bind or own.is_loopback else None,
        )
