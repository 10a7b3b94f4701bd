"""A local pod's listeners, built in one place for both of ztunnel's modes.

- Local mode (``proxy.Ztunnel``): on the pod's address in the host's namespace,
  SOCKS5 ``15080`` and HTTP CONNECT ``15081`` (outbound, always) and HBONE
  ``15008`` (inbound, while the pod is enrolled).
- In-pod mode (``capture.InPodProxy``): inside the pod's network namespace,
  while it is enrolled, HBONE ``15008``, outbound capture ``127.0.0.1:15001``,
  inbound plaintext ``15006`` and DNS ``127.0.0.1:15053`` (UDP and TCP).

Where a listening socket is made is a :class:`Sockets` (``HostSockets``, or the
pod's ``netns.NetnsThread``); what serves each port, and how its upstream
connections are dialled (``ztunnel.dial``), is decided here. Closing is
graceful by default: a listener stops accepting, connections already accepted
carry on (HBONE servers drain their open tunnels).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ambient.hbone.messages import HBONE_PORT
from ambient.hbone.server import HboneServer
from ambient.netns import NetnsError, original_destination
from ambient.state.workload import Workload
from ambient.ztunnel import socks5
from ambient.ztunnel.dial import Dialer
from ambient.ztunnel.dns import DNS_PORT, DnsProtocol, DnsTcpProtocol, mesh_resolver
from ambient.ztunnel.httpconnect import HTTP_CONNECT_PORT, HttpConnectProtocol
from ambient.ztunnel.inbound import InboundHandler
from ambient.ztunnel.inputs import ProxyInputs
from ambient.ztunnel.outbound import OutboundHandler
from ambient.ztunnel.plaintext import Held, PlaintextInbound

__all__ = [
    "INBOUND_CAPTURE_PORT",
    "OUTBOUND_CAPTURE_PORT",
    "SOCKS_PORT",
    "HostSockets",
    "PodListeners",
    "Sockets",
]

log = logging.getLogger("ambient.ztunnel")

SOCKS_PORT = 15080
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
BACKLOG = 1024


class Sockets(Protocol):
    """Where a pod's listening sockets are made."""

    async def listen_tcp(self, host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
        """A bound, listening, non-blocking TCP socket."""
        ...

    async def bind_udp(self, host: str, port: int) -> socket.socket:
        """A bound, non-blocking UDP socket."""
        ...


class HostSockets:
    """Sockets in the host's own network namespace (local mode)."""

    async def listen_tcp(self, host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def bind_udp(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock


class _CapturedOutbound(Held):
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


@dataclass
class PodListeners:
    """The listeners of one local pod (see the module docstring)."""

    inputs: ProxyInputs
    workload: Workload
    sockets: Sockets
    outbound: OutboundHandler
    app_dialer: Dialer  # to the application, as the caller (inbound and captured plaintext)
    socks: asyncio.Server | None = None
    connect: asyncio.Server | None = None
    hbone: HboneServer | None = None
    inbound: InboundHandler | None = None
    capture_out: asyncio.Server | None = None
    capture_in: asyncio.Server | None = None
    plaintext: PlaintextInbound | None = None
    dns: asyncio.DatagramTransport | None = None
    dns_tcp: asyncio.Server | None = None
    draining: list[HboneServer] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return str(self.workload.addresses[0])

    async def _server(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> asyncio.Server:
        sock = await self.sockets.listen_tcp(host, port)
        return await asyncio.get_running_loop().create_server(factory, sock=sock)

    async def open_proxies(self) -> None:
        """SOCKS5 (15080) and HTTP CONNECT (15081) on the pod's address: its outbound."""
        outbound = self.outbound
        if self.socks is None:
            self.socks = await self._server(outbound.protocol, self.ip, SOCKS_PORT)
            self._log("SOCKS5 outbound", SOCKS_PORT)
        if self.connect is None:
            self.connect = await self._server(
                lambda: HttpConnectProtocol(outbound), self.ip, HTTP_CONNECT_PORT
            )
            self._log("HTTP CONNECT outbound", HTTP_CONNECT_PORT)

    async def open_hbone(self) -> None:
        """HBONE inbound (15008) with the pod's certificate."""
        if self.hbone is not None:
            return
        inputs, identity = self.inputs, self.workload.identity
        await inputs.certificate(identity)
        self.inbound = InboundHandler(inputs, self.workload.uid, self.app_dialer)
        server = HboneServer(
            lambda: inputs.current_certificate(identity),
            self.inbound,
            settings=inputs.settings,
            pending=inputs.handshakes,
        )
        server.start_on(await self.sockets.listen_tcp(self.ip, HBONE_PORT))
        self.hbone = server

    async def open_capture(self) -> None:
        """In-pod: outbound capture (15001), inbound plaintext (15006), DNS (15053)."""
        inputs, outbound = self.inputs, self.outbound
        loop = asyncio.get_running_loop()
        if self.capture_in is None:
            self.plaintext = PlaintextInbound(inputs, self.workload, outbound, self.app_dialer)
            self.capture_in = await self._server(
                self.plaintext.protocol, self.ip, INBOUND_CAPTURE_PORT
            )
        if self.capture_out is None:
            self.capture_out = await self._server(
                lambda: _CapturedOutbound(outbound), "127.0.0.1", OUTBOUND_CAPTURE_PORT
            )
        if self.dns is None:
            resolver = mesh_resolver(inputs.state, lambda: self.workload.namespace)
            self.dns, _ = await loop.create_datagram_endpoint(
                lambda: DnsProtocol(lambda _client: resolver),
                sock=await self.sockets.bind_udp("127.0.0.1", DNS_PORT),
            )
        if self.dns_tcp is None:
            resolver = mesh_resolver(inputs.state, lambda: self.workload.namespace)
            self.dns_tcp = await self._server(
                lambda: DnsTcpProtocol(lambda _client: resolver), "127.0.0.1", DNS_PORT
            )

    async def close_hbone(self) -> None:
        """Stop accepting HBONE; open tunnels drain on their own, and each connection
        ends once idle (``HboneServer.drain``: no new CONNECT reaches a gone pod)."""
        if self.hbone is not None:
            await self.hbone.drain()
            self.draining.append(self.hbone)
            self.hbone = None

    def close_capture(self) -> None:
        """Stop accepting on the capture ports; accepted connections carry on."""
        for server in (self.capture_out, self.capture_in, self.dns_tcp):
            if server is not None:
                server.close()
        if self.dns is not None:
            self.dns.close()
        self.capture_out = self.capture_in = self.dns_tcp = None
        self.dns = None

    async def close(self, *, drain: bool) -> None:
        """Close every listener; without ``drain`` also every connection."""
        for listener in (self.socks, self.connect):
            if listener is not None:
                listener.close()  # connections already accepted carry on until they end
        self.socks = self.connect = None
        self.close_capture()
        if not drain:
            await self.outbound.close()
            if self.plaintext is not None:
                self.plaintext.abort_all()
        for server in [*self.draining, *([self.hbone] if self.hbone else [])]:
            await (server.drain() if drain else server.close())
        self.hbone = None

    def _log(self, what: str, port: int) -> None:
        w = self.workload
        log.info(
            "ztunnel %s: %s for %s/%s on %s:%d",
            self.inputs.node, what, w.namespace, w.name, self.ip, port,
        )  # fmt: skip
