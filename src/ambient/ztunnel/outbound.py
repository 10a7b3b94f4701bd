"""Outbound: a local pod's connections, taken by SOCKS5 on ``<podIP>:15080`` (or by the HTTP
CONNECT proxy on ``<podIP>:15081``, ``ztunnel.httpconnect``; the same handler serves both).

The source is the pod whose address was dialled. The destination (an IP, a
service VIP or a mesh hostname) is resolved against the pushed state: a VIP
picks an endpoint round robin; an enrolled destination is reached over HBONE
with the source pod's certificate, anything else by plain TCP. As ztunnel
does, the SOCKS reply is sent at once and a failure afterwards resets the
client's connection.

Everything is event-driven: :class:`SocksProtocol` parses the handshake in
``data_received``; once the upstream is open the client's transport is handed
to a relay protocol (``TcpRelay`` for HBONE, :class:`TcpPipe` for plain TCP).
Plain TCP is dialled with ``ztunnel.dial`` (from the pod's namespace in in-pod
mode, from its loopback address in local mode).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

from ambient.hbone.errors import HboneError, StreamRefused
from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.splice import TcpRelay
from ambient.ipparse import address_text, ip_text, parse_ip
from ambient.state.proxy import Upstream
from ambient.state.workload import TunnelProtocol, Workload
from ambient.ztunnel import socks5
from ambient.ztunnel.authorization import InboundConnection
from ambient.ztunnel.deadlines import Deadlines
from ambient.ztunnel.dial import Dialer
from ambient.ztunnel.inputs import ProxyInputs
from ambient.ztunnel.metrics import ConnectionRecord, Direction, ResponseFlags
from ambient.ztunnel.pipe import TcpPipe
from ambient.ztunnel.routes import Route, Routes
from ambient.ztunnel.selfcall import mesh_listener_target, socks_peer_allowed

log = logging.getLogger("ambient.ztunnel")


@dataclass(frozen=True, slots=True)
class ProxyReplies:
    """What a proxy protocol answers a client: the destination is open, unknown, or refused."""

    succeeded: bytes
    unreachable: bytes
    not_allowed: bytes


def socks_replies(prefix: bytes = b"") -> ProxyReplies:
    """SOCKS5 replies, after ``prefix`` (handshake bytes still owed, sent in the same write).

    Kept per prefix: a client's prefix is the method selection (one of a few values)."""
    found = _SOCKS_REPLIES.get(prefix)
    if found is None:
        found = ProxyReplies(
            prefix + socks5.reply(socks5.Reply.SUCCEEDED),
            prefix + socks5.reply(socks5.Reply.HOST_UNREACHABLE),
            prefix + socks5.reply(socks5.Reply.NOT_ALLOWED),
        )
        if len(_SOCKS_REPLIES) < 16:
            _SOCKS_REPLIES[prefix] = found
    return found


_SOCKS_REPLIES: dict[bytes, ProxyReplies] = {}


_SOCKS = socks_replies()
_SOCKS_GREETED = socks_replies(socks5.NO_AUTHENTICATION)  # greeting and request in one segment
HANDSHAKE_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 3  # per connection to a service: the first endpoint and two others


class OutboundHandler:
    """Serves the SOCKS5 listener of one local pod: ``loop.create_server(handler.protocol, ...)``."""

    def __init__(
        self,
        inputs: ProxyInputs,
        workload_uid: str,
        dialer: Dialer,
        *,
        judge_plaintext: bool = False,
    ) -> None:
        self.inputs = inputs
        self.state = inputs.state
        self.workload_uid = workload_uid
        # With ``dialer.via`` (in-pod mode) connections start in the source pod's namespace.
        self.dialer = dialer
        # Local mode: nothing captures plaintext at an enrolled destination, so its policy
        # is applied here, at the source.
        self.judge_plaintext = judge_plaintext
        self.tasks: set[asyncio.Task[None]] = set()
        self.routes = Routes(bind=dialer.via is not None)
        # Clients still naming their destination (SOCKS5, HTTP CONNECT).
        self.handshakes = Deadlines(HANDSHAKE_TIMEOUT)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the listeners serve on (known once the first client came)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def protocol(self) -> SocksProtocol:
        return SocksProtocol(self)

    async def close(self) -> None:
        """Abort connections still being set up or relayed."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def start(
        self,
        client: asyncio.Transport,
        request: socks5.Socks5Request,
        early: bytes | bytearray,
        *,
        replies: ProxyReplies | None = _SOCKS,
        forwarded_for: SocketAddress | None = None,
        peer: tuple[str, int] | None = None,
    ) -> None:
        """Forward ``client`` to ``request``'s destination; ``replies``: what the client's
        proxy protocol is answered (None for a captured connection: original destination
        known, no reply owed). ``forwarded_for``: the real client when this pod relays
        someone else's connection (a hair-pin). ``peer``: the client's address, when the
        caller already asked the transport."""
        task = self.loop.create_task(
            self._connect(client, request, early, replies, forwarded_for, peer)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(
        self,
        client: asyncio.Transport,
        request: socks5.Socks5Request,
        early: bytes | bytearray,
        replies: ProxyReplies | None,
        forwarded_for: SocketAddress | None = None,
        peer: tuple[str, int] | None = None,
    ) -> None:
        source = self.state.workloads.get(self.workload_uid)
        if source is None or not source.addresses:  # the pod left while we were talking
            client.abort()
            return
        try:
            upstream = await self._resolve(request, source)
        except LookupError as exc:
            log.info("outbound: %s", exc)
            if replies is None:
                client.abort()
                return
            client.write(replies.unreachable)
            client.close()
            return
        final = (
            self.state.workload_by_ip(upstream.ip) if upstream.via_waypoint else upstream.workload
        )
        if mesh_listener_target(final, upstream.port):
            log.warning(
                "outbound: refused %s -> %s:%d: a mesh listener, not an application port",
                source.name,
                upstream.ip,
                upstream.port,
            )
            if replies is None:
                client.abort()
                return
            client.write(replies.not_allowed)
            client.close()
            return
        if replies is not None:
            client.write(replies.succeeded)
        if forwarded_for is not None:
            source_addr = forwarded_for
        else:
            peer = peer or client.get_extra_info("peername") or ("0.0.0.0", 0)
            source_addr = SocketAddress(source.addresses[0], int(peer[1]))
        original = f"{request.host}:{request.port}"
        tried: list[str] = []
        while True:
            # A service's endpoint that cannot be reached (its ztunnel answers 503, or the
            # connect fails) before a byte went anywhere is retried on another healthy
            # endpoint, as Envoy's connect-failure retry: a pod that just died is not yet
            # known to be down everywhere. Never once the tunnel is open.
            retry = (
                upstream.service is not None
                and not upstream.via_waypoint
                and upstream.workload is not None
                and len(tried) < CONNECT_ATTEMPTS - 1
            )
            if await self._attempt(client, early, source, source_addr, upstream, retry, original):
                return
            assert upstream.workload is not None and upstream.service is not None
            tried.append(upstream.workload.uid)
            picked = self.state.pick_endpoint(upstream.service, request.port, exclude=tried)
            if picked is None:
                client.abort()
                return
            upstream = picked

    async def _attempt(
        self,
        client: asyncio.Transport,
        early: bytes | bytearray,
        source: Workload,
        source_addr: SocketAddress,
        upstream: Upstream,
        retry: bool,
        original: str | None = None,
    ) -> bool:
        """One try at ``upstream``; False when it could not be reached and ``retry`` allows
        another (the client is left as it was)."""
        route = self.routes.route(source, upstream)
        record = ConnectionRecord(
            self.inputs.metrics,
            Direction.OUTBOUND,
            src_addr=address_text(source_addr.ip, source_addr.port),
            dst_addr=route.dst_addr,
            source=source,
            source_identity=route.source_identity,
            destination=upstream.workload,
            destination_identity=route.destination_identity,
            service=upstream.service,
            hbone_addr=route.hbone_addr,
            original_dst=original,
            mtls=route.hbone,
        )
        try:
            if route.hbone:
                return await self._via_hbone(client, early, route, source_addr, record, retry)
            return await self._via_tcp(client, early, source, upstream, record, retry)
        except asyncio.CancelledError:
            client.abort()
            raise
        finally:
            record.close()

    async def _resolve(self, request: socks5.Socks5Request, source: Workload) -> Upstream:
        # Only mesh traffic goes through waypoints: a pod outside the mesh connects direct.
        enrolled = source if source.tunnel_protocol is TunnelProtocol.HBONE else None
        if request.is_hostname:
            service = self.state.resolve_host(request.host, source.namespace)
            if service is not None:
                if not service.addresses:
                    upstream = self.state.pick_endpoint(service, request.port)
                else:
                    upstream = self.state.resolve(service.addresses[0], request.port, enrolled)
                if upstream is None:
                    raise LookupError(f"no healthy endpoint of {service.hostname}:{request.port}")
                return upstream
            ip = await _lookup(request.host)
        else:
            ip = parse_ip(request.host)
        upstream = self.state.resolve(ip, request.port, enrolled)
        if upstream is None:
            raise LookupError(f"no healthy endpoint for {request.host}:{request.port}")
        return upstream

    async def _via_hbone(
        self,
        client: asyncio.Transport,
        early: bytes | bytearray,
        route: Route,
        source_addr: SocketAddress,
        record: ConnectionRecord,
        retry: bool = False,
    ) -> bool:
        source = route.source
        assert route.upstream.workload is not None  # so ``expected`` names its identity
        request = ConnectRequest(
            authority=route.authority,
            forwarded_for=source_addr,
            forwarded_host=route.forwarded_host,
        )
        try:
            cert = await self.inputs.certificate(source.identity)
            stream = await self.inputs.pool.open_stream(
                source=cert,
                destination=route.destination,
                expected=route.expected,
                request=request,
                # Bound to the pod's address (in its namespace, or on loopback in local mode):
                # the destination judges the TCP peer, not what ``forwarded`` claims.
                source_ip=route.bind_ip,
            )
        except StreamRefused as exc:
            denied = exc.status == Status.UNAUTHORIZED
            record.flags = ResponseFlags.DENY if denied else ResponseFlags.CONNECT
            record.error = str(exc)
            if retry and not denied:
                return False
            client.abort()
            return True
        except (HboneError, OSError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = str(exc)
            log.warning("outbound: %s -> %s: %s", source.name, request.authority, exc)
            if retry:
                return False
            client.abort()
            return True
        if client.is_closing():  # the client gave up while the tunnel was being opened
            stream.reset()
            record.error = "client closed the connection before the tunnel was open"
            return True
        record.open()
        relay = TcpRelay(stream)
        client.set_protocol(relay)
        relay.connection_made(client)
        if early:
            relay.data_received(bytes(early))
        relay.start()
        client.resume_reading()
        result = await relay.done
        record.bytes_received = result.to_stream
        record.bytes_sent = result.from_stream
        record.error = result.error
        return True

    async def _via_tcp(
        self,
        client: asyncio.Transport,
        early: bytes | bytearray,
        source: Workload,
        upstream: Upstream,
        record: ConnectionRecord,
        retry: bool = False,
    ) -> bool:
        destination = upstream.workload
        checked: InboundConnection | None = None
        if (
            self.judge_plaintext
            and destination is not None
            and destination.tunnel_protocol is TunnelProtocol.HBONE
        ):
            # Without network namespaces nothing captures this plaintext at the destination,
            # so its policy (PeerAuthentication, AuthorizationPolicy) is applied here instead.
            checked = InboundConnection(
                None, source.addresses[0], destination, upstream.ip, upstream.port
            )
            verdict = self.inputs.authorizer()(checked)
            if not verdict.allowed:
                log.info(
                    "RBAC rejected conn=%s(no identity)->%s:%d: %s",
                    source.addresses[0],
                    upstream.ip,
                    upstream.port,
                    verdict.reason,
                )
                record.flags = ResponseFlags.DENY
                record.error = "connection closed due to policy rejection"
                client.abort()
                return True
        pipe = TcpPipe(client)
        try:
            await self.dialer.connect(
                ip_text(upstream.ip),
                upstream.port,
                ip_text(source.addresses[0]),
                lambda: pipe.upstream,
            )
        except (OSError, TimeoutError) as exc:
            record.flags = ResponseFlags.CONNECT
            record.error = f"connect to {upstream.ip}:{upstream.port} failed: {exc or 'timeout'}"
            if retry:
                return False
            client.abort()
            return True
        if client.is_closing():  # the client gave up while the upstream was being dialled
            pipe.abort()
            record.error = "client closed the connection before the upstream was open"
            return True
        record.open()
        client.set_protocol(pipe.downstream)
        pipe.downstream.connection_made(client)
        if early:
            pipe.downstream.data_received(bytes(early))
        client.resume_reading()
        if checked is None:
            counts = await pipe.done
        else:
            source_ip = ip_text(source.addresses[0])
            with self.inputs.connections.tracking(pipe, checked, pipe.abort, source_ip):
                counts = await pipe.done
        record.bytes_received, record.bytes_sent = counts
        return True


class SocksProtocol(asyncio.Protocol):
    """The SOCKS5 handshake of one client connection, then hand-over to a relay.

    The common client sends the one-method greeting, then (at once, or after the
    method selection) a CONNECT to an IPv4 address: each taken whole from its segment
    (``socks5.quick_request``); anything else goes through ``socks5.Socks5Handshake``.
    The handshake's deadline is kept in the handler's :class:`Deadlines`."""

    __slots__ = ("_deadline", "_greeted", "handler", "handshake", "peer", "transport")

    def __init__(self, handler: OutboundHandler) -> None:
        self.handler = handler
        self.handshake: socks5.Socks5Handshake | None = None  # once the quick path cannot
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self._greeted = False
        self._deadline: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        peer = transport.get_extra_info("peername")
        here = transport.get_extra_info("sockname")
        if not serves(here, peer):
            # Only the pod itself may speak through its SOCKS5 port (ambient.ztunnel.selfcall):
            # a connection the mesh relayed here from elsewhere would borrow its identity.
            log.warning(
                "outbound: refused SOCKS5 connection from %s to %s: not the pod's own address",
                peer[0] if peer else "?",
                here[0] if here else "?",
            )
            tcp.abort()
            return
        self.peer = peer
        self._deadline = self.handler.handshakes.add(self, self.handler.loop)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.handshake is None:
            if self._greeted:
                request, prefix = socks5.quick_request(data), b""
            elif data[:3] == socks5.GREETING:
                if len(data) == 3:
                    self._greeted = True
                    transport.write(socks5.NO_AUTHENTICATION)
                    return
                request, prefix = socks5.quick_request(data[3:]), socks5.NO_AUTHENTICATION
            else:
                request = None
            if request is not None:
                self._start(request, b"", _SOCKS if not prefix else _SOCKS_GREETED)
                return
            self.handshake = socks5.Socks5Handshake(greeted=self._greeted)
        handshake = self.handshake
        try:
            request = handshake.receive_data(data)
        except socks5.Socks5Error as exc:
            out = handshake.data_to_send()
            if out:
                transport.write(out)
            if exc.reply is not None:
                transport.write(socks5.reply(exc.reply))
            log.debug("outbound: SOCKS5 handshake refused: %s", exc)
            self._cancel_deadline()
            transport.close()
            return
        out = handshake.data_to_send()
        if request is None:
            if out:
                transport.write(out)
            return
        self._start(request, handshake.leftover(), socks_replies(out))

    def _start(self, request: socks5.Socks5Request, early: bytes, replies: ProxyReplies) -> None:
        transport = self.transport
        assert transport is not None
        self._cancel_deadline()
        transport.pause_reading()
        self.handler.start(transport, request, early, replies=replies, peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()

    def expired(self) -> None:
        """The handshake took too long."""
        self._deadline = None
        if self.transport is not None:
            self.transport.abort()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self.handler.handshakes.discard(self._deadline, self)
            self._deadline = None


def serves(here: tuple[str, int] | None, peer: tuple[str, int] | None) -> bool:
    """Whether a pod's proxy listener at ``here`` (the pod's address: SOCKS5 or HTTP CONNECT)
    serves a client at ``peer`` (``selfcall.socks_peer_allowed``; the answer, a function of
    the two addresses alone, is kept per pair)."""
    if not here or not peer:
        return False
    key = (here[0], peer[0])
    allowed = _SERVES.get(key)
    if allowed is None:
        try:
            allowed = socks_peer_allowed(parse_ip(here[0]), parse_ip(peer[0]))
        except ValueError:
            return False
        if len(_SERVES) < SERVES_KEPT:
            _SERVES[key] = allowed
    return allowed


SERVES_KEPT = 4096
_SERVES: dict[tuple[str, str], bool] = {}


async def _lookup(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Resolve a hostname the mesh does not know with the system resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise LookupError(f"cannot resolve {host!r}: not a mesh hostname nor in DNS") from None
    return ipaddress.ip_address(infos[0][4][0])
