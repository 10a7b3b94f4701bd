"""In-pod mode (``ambient up --netns``): ztunnel's listeners inside each enrolled pod's namespace.

As Istio's in-pod redirection: the node agent (istio-cni's job, here
``ambient.nodeagent``) gives ztunnel each local pod's network namespace; one
ztunnel per node opens, *inside* every enrolled pod's namespace,

- ``127.0.0.1:15001`` outbound capture: every TCP connection the pod makes,
  redirected by nftables; the original destination (``SO_ORIGINAL_DST``) is
  handed to the same outbound path as a SOCKS5 request (VIP → endpoint,
  enrolled destination → HBONE with the pod's certificate, else plain TCP);
- ``<podIP>:15006`` inbound plaintext capture: connections that arrive
  without HBONE. They have no identity, so the destination's L4 policy decides
  on them as plaintext: PERMISSIVE (or no PeerAuthentication) allows, STRICT
  refuses, an ALLOW policy naming principals refuses;
- ``<podIP>:15008`` HBONE inbound;
- ``127.0.0.1:15053`` (UDP and TCP) the DNS proxy (``ambient.ztunnel.dns``);
  the pod's DNS queries to port 53 are redirected there.

Only then does the node agent install the redirection (``nodeagent.redirection``),
so no connection is ever redirected to a port nobody listens on. Leaving the
mesh runs the other way: rules first, then listeners. Connections already
open are never cut by either: conntrack keeps each one on the path it started
on (it runs in the pod's namespace from its creation, whether redirection is
on or off: see ``nodeagent.redirection``), and accepted sockets outlive their
listener.

Decisions:

- ztunnel's own sockets in a pod's namespace carry mark ``0x539`` (Istio's),
  which the rules exempt; the kernel keeps a socket in the namespace it was
  created in, so a :class:`~ambient.netns.NetnsThread` creates
  them and the event loop uses them.
- HBONE client connections start in the *source* pod's namespace (as Istio):
  their source address is the pod's, and they leave through the pod's link.
- The application sees its caller's address, as with Istio's in-pod mode: the
  connection ztunnel makes to it, from inside the destination pod's namespace,
  is bound to the caller's pod IP (``IP_TRANSPARENT``; the address in
  ``forwarded: for=`` when the tunnel came through a waypoint). Its packets
  carry ztunnel's mark, which the pod's ``spoof_pre`` chain copies into the
  connection as ``0x111``; ``spoof_out`` puts that mark back on the
  application's replies, and the pod's policy route (``fwmark 0x111/0xfff
  lookup 100``, table 100 ``local 0.0.0.0/0 dev lo``) delivers them locally to
  ztunnel's socket instead of sending them out of ``eth0`` to the real caller
  (who never opened that connection). Both chains and the route stay whether
  redirection is on or off, so leaving the mesh never strands an open
  connection's replies. Loopback and IPv6 callers are not spoofed (the
  application then sees its own address). Pods with
  ``ambient.io/application-tunnel: PROXY`` also receive the caller in a PROXY
  v2 header, with its port and identity.
- Leaving the mesh removes the rules at once but closes the in-pod listeners
  only :data:`UNENROL_GRACE` seconds later: a connection redirected an instant
  before the rules went can still be in a listener's accept queue (closing the
  listener would reset it), and DNS replies may still be owed.
- Enrolment race: a peer ztunnel may learn that a pod is enrolled a moment
  before that pod's HBONE listener exists. An HBONE dial refused with
  ECONNREFUSED is retried for up to :data:`ENROL_RETRY` seconds (Istio avoids
  the race by publishing a pod as HBONE only after istio-cni annotated it;
  our control plane does not wait). When a pod leaves the mesh its HBONE
  listener also stays open :data:`UNENROL_GRACE` seconds for peers that have not
  heard yet (mTLS, so this never weakens anything).
- Hair-pinning (Istio's inbound passthrough before 1.22): plaintext for a pod
  that has a waypoint came from outside the mesh and so missed the waypoint's
  L7 policy. Under PERMISSIVE it is sent through the waypoint over HBONE
  (:func:`waypoint_target` says which waypoint and which address it is told),
  and comes back to the pod's 15008 from the waypoint; ztunnel's own L4 policy
  is then applied to that hop (its source is the waypoint), as for mesh
  traffic. Under STRICT it is refused as any plaintext. The tunnel to the
  waypoint carries the destination pod's identity (the only one this ztunnel
  holds for it; an out-of-mesh client has none, and may run on another node)
  and the real client in ``forwarded: for=``, so the waypoint's access log and
  ``remoteIpBlocks`` see the caller. As that address is not a workload of the
  destination's identity, the waypoint grants the connection no peer identity
  at all (``waypoint.proxy.caller``): the outside caller never
  passes for the destination's service account or namespace in a policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ambient import authz
from ambient.authz.peerauth import plaintext_allowed
from ambient.hbone.messages import HBONE_PORT, SocketAddress
from ambient.hbone.server import HboneServer
from ambient.netns import (
    NetnsError,
    NetnsThread,
    original_destination,
)
from ambient.state.proxy import ProxyState
from ambient.state.workload import ApplicationTunnel, IPAddress, TunnelProtocol, Workload
from ambient.ztunnel import proxy_protocol, socks5
from ambient.ztunnel.dns import DNS_PORT, DnsProtocol, DnsTcpProtocol, mesh_resolver
from ambient.ztunnel.inbound import InboundConnection, InboundHandler
from ambient.ztunnel.metrics import ConnectionRecord, Direction, ResponseFlags
from ambient.ztunnel.outbound import OutboundHandler, TcpPipe
from ambient.ztunnel.selfcall import is_mesh_port

if TYPE_CHECKING:
    from ambient.ztunnel.proxy import Ztunnel

log = logging.getLogger("ambient.ztunnel")

OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
ENROL_RETRY = 5.0
UNENROL_GRACE = 5.0


def spoofable(source: str | None) -> str | None:
    """The caller address to connect to an application from, or None to use the pod's own
    (IPv4 callers only; a loopback or unspecified address cannot be a caller's)."""
    if source is None:
        return None
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return None
    if ip.version != 4 or ip.is_loopback or ip.is_unspecified:
        return None
    return source


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


class PodNetworks(Protocol):
    """What the node agent offers ztunnel (istio-cni → ztunnel in Istio)."""

    def netns_of(self, workload: Workload) -> NetnsThread | None:
        """The pod's namespace, or None while it does not exist (yet)."""

    async def set_redirection(self, workload: Workload, enabled: bool) -> None:
        """Install or remove the pod's redirection rules (:func:`redirection_rules`)."""


@dataclass
class _InPod:
    """ztunnel's listeners in one pod's namespace."""

    workload: Workload
    netns: NetnsThread
    outbound: OutboundHandler
    capture_out: asyncio.Server | None = None
    capture_in: asyncio.Server | None = None
    plaintext: PlaintextInbound | None = None
    hbone: HboneServer | None = None
    inbound: InboundHandler | None = None
    dns: asyncio.DatagramTransport | None = None
    dns_tcp: asyncio.Server | None = None
    redirected: bool | None = None
    """Whether its redirection is on; None until ztunnel first decides (the node agent may
    have installed it already, as for a pod the CNI plugin reported enrolled)."""
    draining: list[HboneServer] = field(default_factory=list)
    grace: asyncio.TimerHandle | None = None

    @property
    def enrolled(self) -> bool:
        return self.capture_out is not None


class InPodProxy:
    """One node's ztunnel serving its pods from inside their namespaces."""

    def __init__(self, ztunnel: Ztunnel, networks: PodNetworks) -> None:
        self.ztunnel = ztunnel
        self.networks = networks
        self._pods: dict[str, _InPod] = {}
        self._by_ip: dict[str, _InPod] = {}

    # -- following the state ---------------------------------------------------------------

    async def reconcile(self, wanted: dict[str, Workload]) -> None:
        for uid in [u for u in self._pods if u not in wanted]:
            await self._remove(self._pods.pop(uid))
        for uid, workload in wanted.items():
            pod = self._pods.get(uid)
            if pod is not None and pod.workload.addresses != workload.addresses:
                await self._remove(self._pods.pop(uid))
                pod = None
            if pod is None:
                netns = self.networks.netns_of(workload)
                if netns is None:
                    continue  # the node agent has not made its namespace yet; it will ask again
                pod = self._pods[uid] = self._new_pod(workload, netns)
                self._by_ip[str(workload.addresses[0])] = pod
            pod.workload = workload
            try:
                if workload.tunnel_protocol is TunnelProtocol.HBONE:
                    await self._enrol(pod)
                else:
                    await self._unenrol(pod)
            except (OSError, NetnsError) as exc:
                log.error(
                    "ztunnel %s: in-pod setup for %s/%s failed: %s",
                    self.ztunnel.node,
                    workload.namespace,
                    workload.name,
                    exc,
                )
        for pod in self._pods.values():
            for handler in (pod.inbound, pod.plaintext):
                if handler is not None:
                    handler.close_denied()

    def _new_pod(self, workload: Workload, netns: NetnsThread) -> _InPod:
        z = self.ztunnel
        outbound = OutboundHandler(
            z.state, workload.uid, z.metrics, z.pool, z.certificate, dialer=self.dial
        )
        return _InPod(workload, netns, outbound)

    async def _enrol(self, pod: _InPod) -> None:
        if pod.grace is not None:
            pod.grace.cancel()
            pod.grace = None
        if pod.redirected and pod.hbone is not None:
            return
        z, workload, netns = self.ztunnel, pod.workload, pod.netns
        ip = str(workload.addresses[0])
        loop = asyncio.get_running_loop()
        if pod.hbone is None:
            identity = workload.identity
            await z.certificate(identity)
            pod.inbound = InboundHandler(
                z.state,
                workload.uid,
                z.metrics,
                z.authorizer,
                app_dialer=lambda host, port, source: netns.dial(
                    host, port, source=spoofable(source)
                ),
            )
            pod.hbone = HboneServer(
                lambda: z.current_certificate(identity),
                pod.inbound,
                settings=z.settings,
                pending=z.handshakes,
            )
            pod.hbone.start_on(await netns.listen_tcp(ip, HBONE_PORT))
        if pod.capture_in is None:
            pod.plaintext = PlaintextInbound(self, pod)
            pod.capture_in = await loop.create_server(
                pod.plaintext.protocol, sock=await netns.listen_tcp(ip, INBOUND_CAPTURE_PORT)
            )
        if pod.capture_out is None:
            outbound = pod.outbound
            pod.capture_out = await loop.create_server(
                lambda: _CapturedOutbound(outbound),
                sock=await netns.listen_tcp("127.0.0.1", OUTBOUND_CAPTURE_PORT),
            )
        if pod.dns is None:
            resolver = mesh_resolver(z.state, lambda: pod.workload.namespace)
            pod.dns, _ = await loop.create_datagram_endpoint(
                lambda: DnsProtocol(lambda _client: resolver),
                sock=await netns.bind_udp("127.0.0.1", DNS_PORT),
            )
        if pod.dns_tcp is None:
            resolver = mesh_resolver(z.state, lambda: pod.workload.namespace)
            pod.dns_tcp = await loop.create_server(
                lambda: DnsTcpProtocol(lambda _client: resolver),
                sock=await netns.listen_tcp("127.0.0.1", DNS_PORT),
            )
        if not pod.redirected:
            await self.networks.set_redirection(workload, True)
            pod.redirected = True
        log.info(
            "ztunnel %s: %s/%s enrolled in %s (in-pod :15001 :15006 :15008 :15053, %s)",
            z.node,
            workload.namespace,
            workload.name,
            netns.name,
            workload.identity,
        )

    async def _unenrol(self, pod: _InPod) -> None:
        was_on = pod.redirected
        if pod.redirected is not False:
            await self.networks.set_redirection(pod.workload, False)
            pod.redirected = False
        if was_on:
            log.info(
                "ztunnel %s: %s/%s left the mesh; redirection removed",
                self.ztunnel.node,
                pod.workload.namespace,
                pod.workload.name,
            )
        # The capture listeners stay open for the grace period too: a connection redirected
        # just before the rules went may still sit in a listener's accept queue, and closing
        # the listener would reset it. Accepted now, it is served as the state says (plain TCP).
        if pod.grace is None and (pod.hbone is not None or pod.capture_out is not None):
            loop = asyncio.get_running_loop()
            pod.grace = loop.call_later(
                UNENROL_GRACE, lambda: asyncio.ensure_future(self._end_grace(pod))
            )

    async def _end_grace(self, pod: _InPod) -> None:
        pod.grace = None
        if pod.workload.tunnel_protocol is TunnelProtocol.HBONE:
            return  # enrolled again meanwhile
        self._close_capture(pod)
        if pod.hbone is not None:
            await pod.hbone.stop_listening()  # open tunnels drain on their own
            pod.draining.append(pod.hbone)
            pod.hbone = None

    @staticmethod
    def _close_capture(pod: _InPod) -> None:
        """Stop accepting on the capture ports; accepted connections carry on."""
        for server in (pod.capture_out, pod.capture_in, pod.dns_tcp):
            if server is not None:
                server.close()
        if pod.dns is not None:
            pod.dns.close()
        pod.capture_out = pod.capture_in = pod.dns_tcp = None
        pod.dns = None

    async def _remove(self, pod: _InPod, *, drain: bool = True) -> None:
        if pod.grace is not None:
            pod.grace.cancel()
        self._by_ip.pop(str(pod.workload.addresses[0]), None)
        self._close_capture(pod)
        if not drain:
            await pod.outbound.close()
            if pod.plaintext is not None:
                pod.plaintext.abort_all()
        for server in [*pod.draining, *([pod.hbone] if pod.hbone else [])]:
            await (server.stop_listening() if drain else server.close())
        pod.hbone = None
        pod.netns.close()

    async def close(self) -> None:
        for pod in list(self._pods.values()):
            await self._remove(pod, drain=False)
        self._pods.clear()

    # -- sockets in pods' namespaces ----------------------------------------------------------

    async def dial(self, host: str, port: int, source_ip: str | None) -> socket.socket:
        """A connection from the source pod's namespace (``Dialer`` for the pool and outbound)."""
        pod = self._by_ip.get(source_ip or "")
        if pod is None:
            raise OSError(errno.ENETUNREACH, f"no local pod namespace for source {source_ip}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (ENROL_RETRY if port == HBONE_PORT else 0)
        while True:
            try:
                return await pod.netns.dial(host, port)
            except ConnectionRefusedError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    def listeners(self) -> dict[str, dict[str, Any]]:
        """Per pod, which in-pod listeners are open (for ``/config_dump``)."""
        return {
            uid: {
                "netns": p.netns.name,
                "redirected": bool(p.redirected),
                "outbound15001": p.capture_out is not None,
                "inbound15006": p.capture_in is not None,
                "hbone15008": p.hbone is not None,
                "dns15053": p.dns is not None,
                "dnsTcp15053": p.dns_tcp is not None,
            }
            for uid, p in sorted(self._pods.items())
        }


class _Held(asyncio.Protocol):
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


class _CapturedOutbound(_Held):
    """A connection redirected to 15001: look up where it was going, then forward it."""

    def __init__(self, handler: OutboundHandler) -> None:
        super().__init__()
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        tcp.pause_reading()
        sock = tcp.get_extra_info("socket")
        try:
            ip, port = original_destination(sock)
        except (OSError, NetnsError) as exc:
            log.warning("outbound capture: no original destination: %s", exc)
            tcp.abort()
            return
        if (ip, port) == tuple(sock.getsockname()[:2]):  # dialled 15001 itself: would loop
            tcp.abort()
            return
        self.handler.start(tcp, socks5.Socks5Request(ip, port, False), self.early, replies=None)


class _CapturedInbound(_Held):
    def __init__(self, handler: PlaintextInbound) -> None:
        super().__init__()
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        tcp.pause_reading()
        self.handler.start(tcp, self.early)


class PlaintextInbound:
    """Plaintext arriving at an enrolled pod (15006): the destination's policy, no identity."""

    def __init__(self, proxy: InPodProxy, pod: _InPod) -> None:
        self.proxy = proxy
        self.pod = pod
        self.open: dict[TcpPipe, InboundConnection] = {}
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
        self.pod.outbound.start(
            client,
            socks5.Socks5Request(str(target[0]), target[1], False),
            early,
            replies=None,
            forwarded_for=SocketAddress(ipaddress.ip_address(peer[0]), int(peer[1])),
        )

    async def _serve(self, client: asyncio.Transport, early: bytearray) -> None:
        z = self.proxy.ztunnel
        sock = client.get_extra_info("socket")
        peer = client.get_extra_info("peername") or ("0.0.0.0", 0)
        try:
            dst_ip, dst_port = original_destination(sock)
        except (OSError, NetnsError):
            client.abort()
            return
        destination = z.state.workload_by_ip(ipaddress.ip_address(dst_ip))
        record = ConnectionRecord(
            z.metrics,
            Direction.INBOUND,
            src_addr=f"{peer[0]}:{peer[1]}",
            dst_addr=f"{dst_ip}:{dst_port}",
            source=z.state.workload_by_ip(ipaddress.ip_address(peer[0])),
            destination=destination,
            destination_identity=str(destination.identity) if destination else None,
        )
        if destination is None or destination.uid != self.pod.workload.uid:
            record.flags = ResponseFlags.CONNECT
            record.error = f"{dst_ip} is not this pod's address"
            client.abort()
            record.close()
            return
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
            record.close()
            return
        hairpin = waypoint_target(z.state, destination, ipaddress.ip_address(dst_ip), dst_port)
        policy_target = authz.Workload(destination.namespace, destination.labels)
        if hairpin is not None and plaintext_allowed(z.state.policies, policy_target, dst_port):
            self.hairpin(client, early, destination, hairpin, (str(peer[0]), int(peer[1])))
            return
        conn = InboundConnection(
            None, ipaddress.ip_address(peer[0]), destination, ipaddress.ip_address(dst_ip), dst_port
        )
        verdict = z.authorizer()(conn)
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
            record.close()
            return
        loop = asyncio.get_running_loop()
        pipe = TcpPipe(client)
        try:
            upstream = await asyncio.wait_for(
                self.pod.netns.dial(dst_ip, dst_port, source=spoofable(str(peer[0]))), 5.0
            )
            await loop.create_connection(lambda: pipe.upstream, sock=upstream)
        except (OSError, TimeoutError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = f"connection to application {dst_ip}:{dst_port} failed: {exc}"
            client.abort()
            record.close()
            return
        if client.is_closing():  # the client gave up while the application was being dialled
            pipe.abort()
            record.close()
            return
        if destination.application_tunnel is ApplicationTunnel.PROXY:
            assert pipe.upstream.transport is not None
            pipe.upstream.transport.write(
                proxy_protocol.header(
                    (ipaddress.ip_address(peer[0]), int(peer[1])),
                    (ipaddress.ip_address(dst_ip), dst_port),
                    None,
                )
            )
        record.open()
        client.set_protocol(pipe.downstream)
        pipe.downstream.connection_made(client)
        if early:
            pipe.downstream.data_received(bytes(early))
        client.resume_reading()
        self.open[pipe] = conn
        try:
            record.bytes_received, record.bytes_sent = await pipe.done
        finally:
            self.open.pop(pipe, None)
            record.close()

    def close_denied(self) -> int:
        """Re-check open plaintext connections on every push; reset the ones now denied."""
        closed = 0
        z = self.proxy.ztunnel
        current = z.state.workloads.get(self.pod.workload.uid)
        for pipe, conn in list(self.open.items()):
            if current is not None:
                verdict = z.authorizer()(dataclasses.replace(conn, destination=current))
                if verdict.allowed:
                    continue
            log.info(
                "RBAC rejected conn=%s(no identity)->%s:%d: closing established connection",
                conn.source_ip,
                conn.destination_ip,
                conn.destination_port,
            )
            del self.open[pipe]
            pipe.abort()
            closed += 1
        return closed

    def abort_all(self) -> None:
        for pipe in list(self.open):
            pipe.abort()
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            self.open.clear()
