"""Inbound: HBONE streams arriving on ``<podIP>:15008`` for one local pod.

The stream's ``:authority`` must be this pod's address, on a port that is not
one of the mesh's own listeners (else 400: ``ambient.ztunnel.selfcall``). L4
authorization decides next (401 when denied, logged as ``RBAC rejected``),
then ztunnel connects to the application (503 if it cannot) and relays.
The source is the HBONE connection's TCP peer, or the address in
``forwarded: for=`` when the peer may speak for it (``ambient.ztunnel.source``);
policy judges that address, the connection to the application is made from
it when it is local (so the application sees who called, as with Istio's
source-address preservation), and a PROXY header carries it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ambient.hbone.messages import HBONE_PORT, SocketAddress, Status
from ambient.hbone.splice import connect_relay
from ambient.hbone.stream import HboneStream
from ambient.state.proxy import ProxyState
from ambient.state.workload import ApplicationTunnel, Workload
from ambient.ztunnel import proxy_protocol
from ambient.ztunnel.metrics import ConnectionRecord, Direction, Metrics, ResponseFlags
from ambient.ztunnel.selfcall import is_mesh_port
from ambient.ztunnel.source import caller_address

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


class InboundHandler:
    """Serves the HBONE listener of one local pod."""

    def __init__(
        self,
        state: ProxyState,
        workload_uid: str,
        metrics: Metrics,
        authorizer: Callable[[], Authorizer],
        *,
        connect_timeout: float = 5.0,
        app_dialer: Callable[[str, int, str | None], Awaitable[socket.socket]] | None = None,
    ) -> None:
        self.state = state
        # In-pod mode: connections to the application start inside the pod's namespace,
        # from the caller's address (the third argument) where the dialer can spoof it.
        self.app_dialer = app_dialer
        self.workload_uid = workload_uid
        self.metrics = metrics
        self.authorizer = authorizer
        self.connect_timeout = connect_timeout
        # Open tunnels with what authorization decided on, to re-check on every push.
        self.open: dict[HboneStream, InboundConnection] = {}
        self._sources: dict[HboneStream, SocketAddress] = {}  # for the log line

    async def __call__(self, stream: HboneStream) -> None:
        request = stream.request
        target = request.authority
        peer_identity = str(stream.peer.identity)
        peer = SocketAddress(ipaddress.ip_address(stream.peer.address[0]), stream.peer.address[1])
        destination = self.state.workload_by_ip(target.ip)
        source = peer
        if destination is not None:
            source = caller_address(
                self.state, peer_identity, peer, request.forwarded_for, destination
            )
        src_ip = source.ip
        record = ConnectionRecord(
            self.metrics,
            Direction.INBOUND,
            src_addr=str(source),
            dst_addr=str(SocketAddress(target.ip, HBONE_PORT)),
            hbone_addr=str(target),
            source=self.state.workload_by_ip(src_ip),
            source_identity=peer_identity,
            mtls=True,
        )
        if destination is None or destination.uid != self.workload_uid:
            log.warning(
                "inbound: refused CONNECT %s from %s: not this pod's address (400)",
                target,
                peer_identity,
            )
            stream.respond(Status.BAD_REQUEST)
            return
        if is_mesh_port(target.port):
            # The pod's own SOCKS5 port (or any mesh listener) would relay the caller out
            # again as this pod, with its certificate: never a target (Istio's SelfCall).
            log.warning(
                "inbound: refused CONNECT %s from %s: port %d is a mesh listener, "
                "not an application port (400)",
                target,
                peer_identity,
                target.port,
            )
            stream.respond(Status.BAD_REQUEST)
            return
        if request.forwarded_for is not None and source != request.forwarded_for:
            log.info(
                "inbound: %s (%s) may not speak for forwarded %s: judged as its own address",
                peer,
                peer_identity,
                request.forwarded_for,
            )
        record.destination = destination
        record.destination_identity = str(destination.identity)
        if destination.waypoint is not None and not self.state.is_waypoint_identity(
            destination.waypoint, peer_identity
        ):
            # The pod is bound to a waypoint (istio.io/waypoint-for workload|all): its L7
            # policy lives there, so a tunnel that did not come through it is refused
            # (fail closed). Mesh clients never do this: their ztunnel sends them there.
            log.info(
                "RBAC rejected conn=%s(%s)->%s: bypassed waypoint %s",
                record.src_addr,
                peer_identity,
                target,
                destination.waypoint.destination,
            )
            record.flags = ResponseFlags.DENY
            record.error = "connection bypassed the destination's waypoint"
            stream.respond(Status.UNAUTHORIZED)
            record.close()
            return
        if request.forwarded_host:
            record.service = self.state.resolve_host(request.forwarded_host, destination.namespace)
        admitted = InboundConnection(peer_identity, src_ip, destination, target.ip, target.port)
        verdict = self.authorizer()(admitted)
        if not verdict.allowed:
            log.info(
                "RBAC rejected conn=%s(%s)->%s: %s",
                record.src_addr,
                peer_identity,
                target,
                verdict.reason or "denied by policy",
            )
            record.flags = ResponseFlags.DENY
            record.error = "connection closed due to policy rejection"
            stream.respond(Status.UNAUTHORIZED)
            record.close()
            return
        local = (str(src_ip), 0) if src_ip.is_loopback else None
        try:
            # asyncio.timeout rather than wait_for: no extra task per connection.
            async with asyncio.timeout(self.connect_timeout):
                if self.app_dialer is not None:
                    sock = await self.app_dialer(str(target.ip), target.port, str(src_ip))
                    tcp = await connect_relay(stream, str(target.ip), target.port, sock=sock)
                else:
                    tcp = await connect_relay(
                        stream, str(target.ip), target.port, local_address=local
                    )
        except (OSError, TimeoutError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = f"connection to application {target} failed: {exc or 'timeout'}"
            stream.respond(Status.SERVICE_UNAVAILABLE)
            record.close()
            return
        stream.respond(Status.OK)
        if destination.application_tunnel is ApplicationTunnel.PROXY and tcp.transport is not None:
            tcp.transport.write(
                proxy_protocol.header(
                    (source.ip, source.port), (target.ip, target.port), peer_identity
                )
            )
        record.open()
        self.open[stream] = admitted
        self._sources[stream] = source
        tcp.start()
        try:
            result = await tcp.done
        finally:
            self.open.pop(stream, None)
            self._sources.pop(stream, None)
        record.bytes_received, record.bytes_sent = result.from_stream, result.to_stream
        record.error = result.error
        record.close()

    def close_denied(self) -> int:
        """Re-check open connections against current policy; close the denied ones.

        Each is judged on what it was admitted with, against the pod as it is now.
        """
        closed = 0
        destination = self.state.workloads.get(self.workload_uid)
        for stream, admitted in list(self.open.items()):
            if destination is not None:
                verdict = self.authorizer()(dataclasses.replace(admitted, destination=destination))
                if verdict.allowed:
                    continue
                log.info(
                    "RBAC rejected conn=%s(%s)->%s: closing established connection: %s",
                    self._sources.get(stream, admitted.source_ip),
                    admitted.source_identity,
                    stream.request.authority,
                    verdict.reason or "denied by policy",
                )
            del self.open[stream]
            self._sources.pop(stream, None)
            stream.reset()
            closed += 1
        return closed
