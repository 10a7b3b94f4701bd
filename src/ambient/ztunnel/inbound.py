"""Inbound: HBONE streams arriving on ``<podIP>:15008`` for one local pod.

The stream's ``:authority`` must be this pod's address, on a port that is not
one of the mesh's own listeners (else 400: ``ambient.ztunnel.selfcall``). L4
authorization decides next (401 when denied, logged as ``RBAC rejected``),
then ztunnel connects to the application (503 if it cannot) and relays; the
open tunnel is tracked (``ztunnel.connections``) so that a policy change can
close it. The source is the HBONE connection's TCP peer, or the address in
``forwarded: for=`` when the peer may speak for it (``ambient.ztunnel.source``);
policy judges that address, the connection to the application is made as it
(``ztunnel.dial``: the application sees who called, as with Istio's
source-address preservation), and a PROXY header carries it. Every tunnel that
passed the address checks gets one ``ConnectionRecord`` (metrics, access-log
line), closed whatever ends the tunnel.
"""

from __future__ import annotations

import logging

from ambient.hbone.messages import HBONE_PORT, SocketAddress, Status
from ambient.hbone.splice import TcpRelay
from ambient.hbone.stream import HboneStream
from ambient.ipparse import address_text, ip_text, parse_ip
from ambient.state.workload import ApplicationTunnel, Workload
from ambient.ztunnel import proxy_protocol
from ambient.ztunnel.authorization import InboundConnection
from ambient.ztunnel.dial import Dialer
from ambient.ztunnel.ids import identity_text
from ambient.ztunnel.inputs import ProxyInputs
from ambient.ztunnel.metrics import ConnectionRecord, Direction, ResponseFlags
from ambient.ztunnel.selfcall import is_mesh_port
from ambient.ztunnel.source import caller_address

log = logging.getLogger("ambient.ztunnel")


class InboundHandler:
    """Serves the HBONE listener of one local pod."""

    def __init__(self, inputs: ProxyInputs, workload_uid: str, dialer: Dialer) -> None:
        self.inputs = inputs
        self.workload_uid = workload_uid
        self.dialer = dialer  # to the application, as the caller

    async def __call__(self, stream: HboneStream) -> None:
        state = self.inputs.state
        request = stream.request
        target = request.authority
        peer_identity = str(stream.peer.identity)
        peer = SocketAddress(parse_ip(stream.peer.address[0]), stream.peer.address[1])
        destination = state.workload_by_ip(target.ip)
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
        source = caller_address(state, peer_identity, peer, request.forwarded_for, destination)
        if request.forwarded_for is not None and source != request.forwarded_for:
            log.info(
                "inbound: %s (%s) may not speak for forwarded %s: judged as its own address",
                peer,
                peer_identity,
                request.forwarded_for,
            )
        record = ConnectionRecord(
            self.inputs.metrics,
            Direction.INBOUND,
            src_addr=address_text(source.ip, source.port),
            dst_addr=address_text(target.ip, HBONE_PORT),
            hbone_addr=address_text(target.ip, target.port),
            source=state.workload_by_ip(source.ip),
            source_identity=peer_identity,
            destination=destination,
            destination_identity=identity_text(destination),
            mtls=True,
        )
        try:
            await self._serve(stream, destination, source, record)
        finally:
            record.close()

    async def _serve(
        self,
        stream: HboneStream,
        destination: Workload,
        source: SocketAddress,
        record: ConnectionRecord,
    ) -> None:
        state = self.inputs.state
        request = stream.request
        target = request.authority
        peer_identity = record.source_identity
        if destination.waypoint is not None and not state.is_waypoint_identity(
            destination.waypoint, str(peer_identity)
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
            return
        if request.forwarded_host:
            record.service = state.resolve_host(request.forwarded_host, destination.namespace)
        admitted = InboundConnection(peer_identity, source.ip, destination, target.ip, target.port)
        verdict = self.inputs.authorizer()(admitted)
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
            return
        try:
            tcp = await self.dialer.connect(
                ip_text(target.ip), target.port, ip_text(source.ip), lambda: TcpRelay(stream)
            )
        except (OSError, TimeoutError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = f"connection to application {target} failed: {exc or 'timeout'}"
            stream.respond(Status.SERVICE_UNAVAILABLE)
            return
        stream.respond(Status.OK)
        if destination.application_tunnel is ApplicationTunnel.PROXY and tcp.transport is not None:
            tcp.transport.write(
                proxy_protocol.header(
                    (source.ip, source.port), (target.ip, target.port), peer_identity
                )
            )
        record.open()
        with self.inputs.connections.tracking(stream, admitted, stream.reset, str(source)):
            tcp.start()
            result = await tcp.done
        record.bytes_received, record.bytes_sent = result.from_stream, result.to_stream
        record.error = result.error
