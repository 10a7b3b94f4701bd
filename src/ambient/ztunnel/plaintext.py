"""Plaintext captured at an enrolled pod (``<podIP>:15006``, in-pod mode): no identity.

A connection redirected to 15006 arrived without HBONE. The destination's L4
policy judges it as plaintext (PERMISSIVE or no PeerAuthentication allows,
STRICT refuses, an ALLOW naming principals refuses); an allowed one is relayed
to the application as its caller (``ztunnel.dial``, from the pod's namespace)
and tracked (``ztunnel.connections``). Plaintext for a pod that has a waypoint
is hair-pinned through it instead (``waypoint_target``; decisions in
``ztunnel.capture``). Every connection gets one ``ConnectionRecord``, closed
whatever ends it.
"""

from __future__ import annotations

import asyncio
import logging

from ambient import authz
from ambient.authz.peerauth import plaintext_allowed
from ambient.hbone.messages import SocketAddress
from ambient.ipparse import parse_ip
from ambient.netns import NetnsError, original_destination
from ambient.state.proxy import ProxyState
from ambient.state.workload import ApplicationTunnel, IPAddress, Workload
from ambient.ztunnel import proxy_protocol, socks5
from ambient.ztunnel.authorization import InboundConnection
from ambient.ztunnel.dial import Dialer
from ambient.ztunnel.inputs import ProxyInputs
from ambient.ztunnel.metrics import ConnectionRecord, Direction, ResponseFlags
from ambient.ztunnel.outbound import OutboundHandler
from ambient.ztunnel.pipe import TcpPipe
from ambient.ztunnel.selfcall import is_mesh_port

__all__ = ["Held", "PlaintextInbound", "waypoint_target"]

log = logging.getLogger("ambient.ztunnel")


class Held(asyncio.Protocol):
    """Holds what a captured client sends until a relay takes the transport over.

    (An event loop may start reading right after ``connection_made``, so the
    bytes are kept here, and reading pauses until the hand-over.)"""

    def __init__(self) -> None:
        self.early = bytearray()
        self.transport: asyncio.Transport | None = None

    def data_received(self, data: bytes) -> None:
        self.early += data
        if self.transport is not None:
            self.transport.pause_reading()


class _CapturedInbound(Held):
    def __init__(self, handler: PlaintextInbound) -> None:
        super().__init__()
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        tcp.pause_reading()
        self.handler.start(tcp, self.early)


class PlaintextInbound:
    """Serves one enrolled pod's 15006 (see the module docstring)."""

    def __init__(
        self, inputs: ProxyInputs, workload: Workload, outbound: OutboundHandler, dialer: Dialer
    ) -> None:
        self.inputs = inputs
        self.workload = workload
        self.outbound = outbound  # the pod's own: a hair-pin leaves as its connection
        self.dialer = dialer  # to the application, as the caller
        self.pipes: set[TcpPipe] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def protocol(self) -> _CapturedInbound:
        return _CapturedInbound(self)

    def start(self, client: asyncio.Transport, early: bytearray) -> None:
        task = asyncio.ensure_future(self._serve(client, early))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def hairpin(
        self,
        client: asyncio.Transport,
        early: bytearray,
        destination: Workload,
        target: tuple[IPAddress, int],
        peer: tuple[str, int],
    ) -> None:
        """Send plaintext for a waypoint-bound ``destination`` through its waypoint.

        It leaves as the destination pod's outbound connection to ``target`` (which
        resolves to the waypoint), with the real client in ``forwarded: for=``; the
        waypoint's tunnel back to the pod arrives on 15008 like any other."""
        log.info(
            "inbound plaintext %s:%d -> %s:%d: hair-pinned through the waypoint for %s:%d",
            peer[0],
            peer[1],
            destination.addresses[0],
            target[1] if target[0] in destination.addresses else 0,
            target[0],
            target[1],
        )
        self.outbound.start(
            client,
            socks5.Socks5Request(str(target[0]), target[1], False),
            early,
            replies=None,
            forwarded_for=SocketAddress(parse_ip(peer[0]), int(peer[1])),
        )

    async def _serve(self, client: asyncio.Transport, early: bytearray) -> None:
        state = self.inputs.state
        sock = client.get_extra_info("socket")
        peer = client.get_extra_info("peername") or ("0.0.0.0", 0)
        try:
            dst_ip, dst_port = original_destination(sock)
        except (OSError, NetnsError):
            client.abort()
            return
        destination = state.workload_by_ip(parse_ip(dst_ip))
        record = ConnectionRecord(
            self.inputs.metrics,
            Direction.INBOUND,
            src_addr=f"{peer[0]}:{peer[1]}",
            dst_addr=f"{dst_ip}:{dst_port}",
            source=state.workload_by_ip(parse_ip(peer[0])),
            destination=destination,
            destination_identity=str(destination.identity) if destination else None,
        )
        handed_over = False  # to the pod's outbound handler, which keeps its own record
        try:
            handed_over = await self._relay(
                client, early, (str(peer[0]), int(peer[1])), (dst_ip, dst_port), destination, record
            )
        except asyncio.CancelledError:
            client.abort()
            raise
        finally:
            if not handed_over:
                record.close()

    async def _relay(
        self,
        client: asyncio.Transport,
        early: bytearray,
        peer: tuple[str, int],
        dst: tuple[str, int],
        destination: Workload | None,
        record: ConnectionRecord,
    ) -> bool:
        """Judge and relay one connection; True if a hair-pin took it over."""
        state = self.inputs.state
        dst_ip, dst_port = dst
        if destination is None or destination.uid != self.workload.uid:
            record.flags = ResponseFlags.CONNECT
            record.error = f"{dst_ip} is not this pod's address"
            client.abort()
            return False
        if is_mesh_port(dst_port):
            # A mesh listener is never an application port (ambient.ztunnel.selfcall): dialled
            # from here, 15006 would take the connection back in, again and again.
            log.warning(
                "inbound plaintext %s:%d -> %s:%d: refused, a mesh listener",
                peer[0],
                peer[1],
                dst_ip,
                dst_port,
            )
            record.flags = ResponseFlags.DENY
            record.error = f"port {dst_port} is a mesh listener, not an application port"
            client.abort()
            return False
        hairpin = waypoint_target(state, destination, parse_ip(dst_ip), dst_port)
        policy_target = authz.Workload(destination.namespace, destination.labels)
        if hairpin is not None and plaintext_allowed(state.policies, policy_target, dst_port):
            self.hairpin(client, early, destination, hairpin, peer)
            return True
        conn = InboundConnection(None, parse_ip(peer[0]), destination, parse_ip(dst_ip), dst_port)
        verdict = self.inputs.authorizer()(conn)
        if not verdict.allowed:
            log.info(
                "RBAC rejected conn=%s:%d(no identity)->%s:%d: %s",
                peer[0],
                peer[1],
                dst_ip,
                dst_port,
                verdict.reason or "denied by policy",
            )
            record.flags = ResponseFlags.DENY
            record.error = "connection closed due to policy rejection"
            client.abort()
            return False
        pipe = TcpPipe(client)
        try:
            await self.dialer.connect(dst_ip, dst_port, peer[0], lambda: pipe.upstream)
        except (OSError, TimeoutError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = f"connection to application {dst_ip}:{dst_port} failed: {exc}"
            client.abort()
            return False
        if client.is_closing():  # the client gave up while the application was being dialled
            pipe.abort()
            return False
        if destination.application_tunnel is ApplicationTunnel.PROXY:
            assert pipe.upstream.transport is not None
            pipe.upstream.transport.write(
                proxy_protocol.header(
                    (parse_ip(peer[0]), peer[1]),
                    (parse_ip(dst_ip), dst_port),
                    None,
                )
            )
        record.open()
        client.set_protocol(pipe.downstream)
        pipe.downstream.connection_made(client)
        if early:
            pipe.downstream.data_received(bytes(early))
        client.resume_reading()
        self.pipes.add(pipe)
        try:
            with self.inputs.connections.tracking(pipe, conn, pipe.abort, peer[0]):
                record.bytes_received, record.bytes_sent = await pipe.done
        finally:
            self.pipes.discard(pipe)
        return False

    def abort_all(self) -> None:
        """Reset every connection (ztunnel is closing)."""
        for pipe in list(self.pipes):
            pipe.abort()
        for task in list(self.tasks):
            task.cancel()


def waypoint_target(
    state: ProxyState, destination: Workload, ip: IPAddress, port: int
) -> tuple[IPAddress, int] | None:
    """Where plaintext that reached ``destination`` at ``ip:port`` should be sent so that it
    passes the destination's waypoint, or None when no waypoint applies.

    The pod's own waypoint (``waypoint-for: workload|all``) takes the address as it is.
    Else, as the node's service NAT turned a Service VIP into this pod's address before
    the packet got here, a Service of the pod that uses a waypoint and maps a port to
    ``port`` is taken to be what the client called (the first by name if several do):
    its VIP and service port, which the waypoint routes and authorizes as the Service."""
    if destination.waypoint is not None:
        return ip, port
    for key in sorted(destination.services):
        service = state.services.get(key)
        if service is None or service.waypoint is None or not service.addresses:
            continue
        for p in service.ports:
            if state.workload_port(service, destination, p.service_port) == port:
                return service.addresses[0], p.service_port
    return None
