"""The waypoint proxy: HBONE in, HTTP (or TCP) policy and routing, HBONE out.

A :class:`Waypoint` listens for HBONE on ``<address>:15008`` for each of its
addresses, with its own workload certificate (e.g.
``spiffe://cluster.local/ns/shop/sa/waypoint``), and serves admin
(``:15000/config_dump``), metrics (``:15020/metrics``, also
``/stats/prometheus``) and readiness (``:15021/healthz/ready``) on its first
address, like ztunnel.

Each CONNECT names what the client addressed: a service VIP:port, or a
workload ip:port for workload waypoints. Only targets bound to this waypoint
(their ``waypoint`` GatewayAddress names this waypoint's service key
``ns/hostname`` or one of its addresses) and, for services, a declared
service port are accepted; anything else is answered ``400``. The client's
identity is the HBONE peer's SPIFFE id (the source ztunnel connects with the
client's certificate); its address comes from ``forwarded: for=`` when the
peer may speak for it (``caller``), else it is the TCP peer's.

Once accepted (200), a service port declared TCP or TLS (``appProtocol``
or name, ``proxy.protocols``) is passed through with L4 policy (``tcp``);
otherwise the tunnel's first bytes decide how it is served (``sniff``):
HTTP/1.x (``http1``), HTTP/2 prior knowledge (``http2``), or TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ambient.config.rules import CLUSTER_DOMAIN
from ambient.hbone.admission import PendingHandshakes
from ambient.hbone.messages import HBONE_PORT, SocketAddress, Status
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.protocol import HboneSettings
from ambient.hbone.server import HboneServer
from ambient.hbone.stream import HboneStream
from ambient.httpd import AdminServer, Request, Response
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.logconfig import WORKLOAD
from ambient.rlimit import raise_open_files_limit
from ambient.state.proxy import ProxyState
from ambient.state.workload import AppProtocol, GatewayAddress, IPAddress, Service, Workload
from ambient.waypoint.model import (
    Downstream,
    RequestAuthenticator,
    RequestAuthorizer,
    Router,
    Target,
)
from ambient.waypoint.proxy import sniff
from ambient.waypoint.proxy.accesslog import RequestRecord
from ambient.waypoint.proxy.balancer import Balancer, Endpoint
from ambient.waypoint.proxy.caller import caller_of
from ambient.waypoint.proxy.defaults import AllowAll, ForwardToTarget, NoAuthentication
from ambient.waypoint.proxy.forward import Forwarder, Policies
from ambient.waypoint.proxy.http1 import serve_http1
from ambient.waypoint.proxy.http2 import serve_http2
from ambient.waypoint.proxy.metrics import WaypointMetrics
from ambient.waypoint.proxy.protocols import passes_through
from ambient.waypoint.proxy.tcp import pass_through
from ambient.waypoint.proxy.upstream import UpstreamClient

if TYPE_CHECKING:
    from ambient.config.telemetry import EffectiveTelemetry
    from ambient.netns import NetnsThread
    from ambient.waypoint.tracing.tracer import Tracer

log = logging.getLogger("ambient.waypoint")

__all__ = ["Tunnel", "Waypoint"]

ADMIN_PORT = 15000
METRICS_PORT = 15020
READINESS_PORT = 15021


@dataclass(slots=True)
class Tunnel:
    """One accepted HBONE stream: what the client addressed and who it is."""

    waypoint: Waypoint
    stream: HboneStream
    target: Target
    downstream: Downstream
    source: Workload | None

    @property
    def forwarder(self) -> Forwarder:
        return self.waypoint.forwarder

    def new_record(self, protocol: str) -> RequestRecord:
        telemetry = self.waypoint.telemetry
        return RequestRecord(
            self.waypoint.metrics,
            self.target,
            self.downstream,
            self.source,
            protocol,
            telemetry=telemetry() if telemetry is not None else None,
        )


class Waypoint:
    """One waypoint (an ``istio-waypoint`` Gateway's proxy)."""

    def __init__(
        self,
        name: str,
        namespace: str,
        addresses: Sequence[IPAddress | str],
        state: ProxyState,
        certificates: CertificateManager,
        *,
        service_account: str | None = None,
        trust_domain: str = "cluster.local",
        hostname: str | None = None,
        authenticator: RequestAuthenticator | None = None,
        authorizer: RequestAuthorizer | None = None,
        router: Router | None = None,
        balancer: Balancer | None = None,
        settings: HboneSettings | None = None,
        hbone_port: int = HBONE_PORT,
        ports: tuple[int, int, int] = (ADMIN_PORT, METRICS_PORT, READINESS_PORT),
        protocol_detection_timeout: float = sniff.DEFAULT_TIMEOUT,
        netns: NetnsThread | None = None,
        telemetry: Callable[[], EffectiveTelemetry] | None = None,
        tracing: Callable[[], Tracer | None] | None = None,
        reuse_port: bool = False,
        admin: bool = True,
    ) -> None:
        if not addresses:
            raise ValueError(f"waypoint {namespace}/{name}: at least one address is required")
        self.name = name
        self.namespace = namespace
        self.addresses = tuple(ipaddress.ip_address(a) for a in addresses)
        self.hostname = hostname or f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"
        self.service_key = f"{namespace}/{self.hostname}"
        self.identity = SpiffeId.workload(namespace, service_account or name, trust_domain)
        self.state = state
        self.certificates = certificates
        self.settings = settings or HboneSettings()
        self.metrics = WaypointMetrics()
        self.telemetry = telemetry  # the Telemetry API's access-log and metric settings
        self.policies = Policies(
            authenticator or NoAuthentication(),
            authorizer or AllowAll(),
            router or ForwardToTarget(),
        )
        # ``ambient up --netns``: the waypoint pod's own namespace holds its listeners and
        # the sockets of its upstream connections.
        self.netns = netns
        dialer = (lambda host, port, _source: netns.dial(host, port)) if netns else None
        self.pool = ConnectionPool(settings=self.settings, dialer=dialer)
        self.upstream = UpstreamClient(self.pool, source_ip=str(self.addresses[0]))
        self.forwarder = Forwarder(state, self.policies, self.upstream, balancer)
        self.forwarder.tracing = tracing  # spans per request and attempt (``waypoint.tracing``)
        self.tracing = tracing
        self.protocol_detection_timeout = protocol_detection_timeout
        self._hbone_port = hbone_port
        self._ports = ports
        # Worker processes (``waypoint.workers``): every one binds the HBONE listeners with
        # SO_REUSEPORT; only the first serves the admin endpoints, its /metrics the sum of
        # every worker's (``worker_metrics`` gives the others' exposition texts).
        self.reuse_port = reuse_port
        self._serve_admin = admin
        self.worker_metrics: Callable[[], Awaitable[list[bytes]]] | None = None
        self._certificate: WorkloadCertificate | None = None
        self._servers: list[HboneServer] = []
        self._admin: list[AdminServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._unsubscribe = certificates.subscribe(self._on_certificate)
        self._ready = False
        self.hbone_addresses: list[tuple[str, int]] = []
        self.admin_addresses: dict[str, tuple[str, int]] = {}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Get the certificate, then open the HBONE listeners and the admin endpoints."""
        raise_open_files_limit()
        self._on_certificate(await self.certificates.get(self.identity))
        handshakes = PendingHandshakes()  # bounded across this waypoint's addresses
        for address in self.addresses:
            server = HboneServer(
                self._current_certificate, self._serve, settings=self.settings, pending=handshakes
            )
            if self.netns is not None:
                listener = await self.netns.listen_tcp(str(address), self._hbone_port)
                self.hbone_addresses.append(server.start_on(listener))
            else:
                bound = await server.start(
                    str(address), self._hbone_port, reuse_port=self.reuse_port
                )
                self.hbone_addresses.append(bound)
            self._servers.append(server)
        admin, metrics, ready = self._ports
        servers = {
            "admin": (AdminServer({"/config_dump": self._config_dump}), admin),
            "metrics": (
                AdminServer({"/metrics": self._metrics, "/stats/prometheus": self._metrics}),
                metrics,
            ),
            "readiness": (AdminServer({"/healthz/ready": self._readiness}), ready),
        }
        for label, (server_, port) in servers.items() if self._serve_admin else ():
            if self.netns is not None:
                listener = await self.netns.listen_tcp(str(self.addresses[0]), port)
                self.admin_addresses[label] = await server_.start_on(listener)
            else:
                self.admin_addresses[label] = await server_.start(str(self.addresses[0]), port)
            self._admin.append(server_)
        self._sweeper = asyncio.ensure_future(self._sweep())
        self._ready = True
        token = WORKLOAD.set(f"{self.namespace}/{self.name}")
        log.info(
            "waypoint %s/%s (%s) listening for HBONE on %s",
            self.namespace,
            self.name,
            self.identity,
            ", ".join(f"{h}:{p}" for h, p in self.hbone_addresses),
        )
        WORKLOAD.reset(token)

    async def close(self) -> None:
        self._ready = False
        self._unsubscribe()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for server in self._servers:
            await server.close()
        await self.forwarder.close()
        aclose = getattr(self.tracing, "aclose", None)
        if aclose is not None:  # flush the spans still queued
            await aclose()
        self.upstream.close()
        await self.pool.close()
        for admin in self._admin:
            await admin.close()

    @property
    def ready(self) -> bool:
        return self._ready

    async def open_tunnel(self, endpoint: Endpoint) -> HboneStream:
        """A raw HBONE stream to ``endpoint`` (TCP passthrough)."""
        return await self.upstream.open_stream(endpoint)

    # -- accepting tunnels ------------------------------------------------------------

    def bound_here(self, waypoint: GatewayAddress | None) -> bool:
        """Whether a Service/Workload's ``waypoint`` is this waypoint."""
        if waypoint is None:
            return False
        if waypoint.destination == self.service_key:
            return True
        try:
            return ipaddress.ip_address(waypoint.destination) in self.addresses
        except ValueError:
            return False

    def target_of(self, authority: SocketAddress) -> Target | str:
        """The Target a CONNECT authority names, or why it is not served here."""
        service: Service | None = self.state.service_by_vip(authority.ip)
        if service is not None:
            if not self.bound_here(service.waypoint):
                return f"service {service.key} does not use waypoint {self.service_key}"
            if not any(p.service_port == authority.port for p in service.ports):
                return f"service {service.key} has no port {authority.port}"
            return Target(service.namespace, service.hostname, authority.ip, authority.port)
        workload = self.state.workload_by_ip(authority.ip)
        if workload is not None:
            if not self.bound_here(workload.waypoint):
                return f"workload {workload.namespace}/{workload.name} does not use this waypoint"
            return Target(workload.namespace, None, authority.ip, authority.port)
        return f"{authority.ip} is neither a service nor a workload the waypoint knows"

    async def _serve(self, stream: HboneStream) -> None:
        WORKLOAD.set(f"{self.namespace}/{self.name}")  # tags this stream's log lines
        request = stream.request
        target = self.target_of(request.authority)
        if isinstance(target, str):
            log.warning(
                "waypoint %s: refused CONNECT %s from %s: %s (400)",
                self.name,
                request.authority,
                stream.peer.identity,
                target,
            )
            stream.respond(Status.BAD_REQUEST)
            return
        forwarded = request.forwarded_for
        peer = SocketAddress(ipaddress.ip_address(stream.peer.address[0]), stream.peer.address[1])
        caller = caller_of(self.state, stream.peer.identity, peer, forwarded, request.authority)
        if forwarded is not None and caller.address != forwarded:
            log.info(
                "waypoint %s: %s (%s) may not speak for forwarded %s: judged as its own address",
                self.name,
                peer,
                stream.peer.identity,
                forwarded,
            )
        elif caller.identity is None:
            log.debug(
                "waypoint %s: %s relays %s, which is not one of its workloads: "
                "no peer identity for this connection",
                self.name,
                stream.peer.identity,
                caller.address,
            )
        downstream = Downstream(caller.identity, caller.address.ip, caller.address.port)
        tunnel = Tunnel(self, stream, target, downstream, caller.workload)
        stream.respond(Status.OK)
        await self._serve_protocol(tunnel)
        if not stream.closed and stream.at_eof:
            stream.write_eof()
        elif not stream.closed:
            # Served, but the client has not half-closed yet: give it a moment to finish.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_until_eof(stream), 5.0)

    async def _serve_protocol(self, tunnel: Tunnel) -> None:
        """HTTP/1.x, h2c or TCP: a port declared TCP or TLS is not parsed as HTTP (Envoy's
        TCP proxy chain); otherwise the first bytes decide (``sniff``)."""
        if passes_through(self.declared_protocol(tunnel.target)):
            await pass_through(tunnel, b"")
            return
        protocol, initial = await sniff.sniff(tunnel.stream, self.protocol_detection_timeout)
        if protocol is sniff.Protocol.HTTP1:
            await serve_http1(tunnel, initial)
        elif protocol is sniff.Protocol.HTTP2:
            await serve_http2(tunnel, initial)
        else:
            await pass_through(tunnel, initial)

    def declared_protocol(self, target: Target) -> AppProtocol:
        """What the addressed service port declares (UNKNOWN for a workload target)."""
        if target.hostname is None:
            return AppProtocol.UNKNOWN
        service = self.state.services.get(f"{target.namespace}/{target.hostname}")
        for port in service.ports if service is not None else ():
            if port.service_port == target.port:
                return port.app_protocol
        return AppProtocol.UNKNOWN

    # -- certificates -------------------------------------------------------------------

    def _on_certificate(self, cert: WorkloadCertificate) -> None:
        if cert.identity == self.identity:
            self._certificate = cert
            self.upstream.certificate = cert

    def _current_certificate(self) -> WorkloadCertificate:
        assert self._certificate is not None
        return self._certificate

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.upstream.expire_idle()

    # -- admin endpoints -------------------------------------------------------------------

    def config_dump(self) -> dict[str, Any]:
        services = [s.key for s in self.state.services.values() if self.bound_here(s.waypoint)]
        workloads = [w.uid for w in self.state.workloads.values() if self.bound_here(w.waypoint)]
        return {
            "waypoint": {"name": self.name, "namespace": self.namespace, "key": self.service_key},
            "identity": str(self.identity),
            "addresses": [str(a) for a in self.addresses],
            "services": sorted(services),
            "workloads": sorted(workloads),
            "upstreamConnections": len(self.pool.connections()),
        }

    def _config_dump(self, _request: Request) -> Response:
        return Response(200, json.dumps(self.config_dump(), indent=2).encode(), "application/json")

    async def _metrics(self, _request: Request) -> Response:
        own = generate_latest(self.metrics.registry)
        if self.worker_metrics is None:
            return Response(200, own, CONTENT_TYPE_LATEST)
        from ambient.waypoint.metricsum import sum_expositions

        texts = [own, *await self.worker_metrics()]
        return Response(200, sum_expositions(texts), CONTENT_TYPE_LATEST)

    def _readiness(self, _request: Request) -> Response:
        if self._ready:
            return Response(200, b"ready\n")
        return Response(503, b"not ready\n")


async def _until_eof(stream: HboneStream) -> None:
    while await stream.read():
        pass
    stream.write_eof()
