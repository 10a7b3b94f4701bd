"""A waypoint between a client and a real destination ztunnel, on loopback.

- ``App``: an h11 HTTP/1.1 app (keep-alive) on each ``orders`` pod: ``/hello``
  (JSON: app name, version, headers seen, peer), ``/echo`` (streams the body
  back as it arrives), ``/bytes?n=N`` (N zero bytes, streamed), ``/sink``
  (reads the body, answers its size), ``/slow?ms=N``; plus a TCP echo on 9000.
  Failing on purpose (for retries and outlier detection): ``/fail?n=N&key=K``
  answers 503 to the first N requests with key K across all apps (``n=-1``:
  always), ``&only=POD`` limits it to that pod, ``&code=C`` changes the
  status; ``/reset`` closes the connection without an answer (also with
  ``n``/``key``/``only``); ``/hang`` never answers. Service port 80 (app
  8080) declares ``http`` (HTTP/1.1 upstream).
- A WebSocket echo (the ``websockets`` package) on each pod's 8765 (service port
  8765, undeclared): it first sends ``hello from <pod> <path>``, then echoes.
- ``grpcapp.Echo`` (grpcio, ``tests/e2e/grpcapp``) on each pod's 50051: service
  port 50051 does not declare a protocol (the downstream's version goes
  upstream), port 82 declares ``grpc`` (HTTP/2 upstream).
- ``Entry``: a plaintext TCP listener standing in for the source ztunnel's
  outbound: every connection becomes an HBONE CONNECT (with the ``web`` pod's
  certificate and ``forwarded: for=``) to the waypoint, for the service VIP,
  so that curl and nghttp can be the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import h11
import websockets
import websockets.asyncio.server

from ambient.frozen import FrozenMap
from ambient.hbone.messages import ConnectRequest, SocketAddress
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.splice import TcpRelay
from ambient.hbone.stream import HboneStream
from ambient.identity.ca import CertificateAuthority
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.state.proxy import ProxyState
from ambient.state.workload import (
    AppProtocol,
    GatewayAddress,
    Port,
    Service,
    TunnelProtocol,
    Workload,
)
from ambient.waypoint.proxy import Waypoint
from ambient.ztunnel.proxy import Ztunnel
from tests.e2e.grpcapp import echo

BASE = 40 + (os.getpid() % 200)
NS = "shop"
WAYPOINT_KEY = f"{NS}/waypoint.{NS}.svc.cluster.local"
TCP_PORT = 9000
GRPC_PORT = 50051  # undeclared service port (and the app's port)
GRPC_DECLARED = 82  # service port declaring grpc, to the app's 50051
H2_SCRIPTED = 84  # service port declaring http2, to 50052: servers some tests start themselves
WS_PORT = 8765


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"127.{BASE}.{text}")


WAYPOINT_IP = ip("3.1")
ORDERS = Service(
    name="orders",
    namespace=NS,
    hostname=f"orders.{NS}.svc.cluster.local",
    addresses=(ip("2.1"),),
    ports=(
        Port(80, 8080, AppProtocol.HTTP11),
        Port(TCP_PORT, TCP_PORT),
        Port(GRPC_PORT, GRPC_PORT),
        Port(GRPC_DECLARED, GRPC_PORT, AppProtocol.GRPC),
        Port(H2_SCRIPTED, 50052, AppProtocol.HTTP2),
        Port(WS_PORT, WS_PORT),
    ),
    waypoint=GatewayAddress(WAYPOINT_KEY),
)
UNBOUND = Service(
    name="billing",
    namespace=NS,
    hostname=f"billing.{NS}.svc.cluster.local",
    addresses=(ip("2.2"),),
    ports=(Port(80, 8080),),
)


def pod(
    name: str, addr: str, node: str, sa: str, version: str = "v1", svc: bool = False
) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/{NS}/{name}",
        name=name,
        namespace=NS,
        addresses=(ip(addr),),
        service_account=sa,
        node=node,
        tunnel_protocol=TunnelProtocol.HBONE,
        workload_name=name.rsplit("-", 1)[0],
        canonical_name=sa,
        canonical_revision=version,
        labels=FrozenMap({"app": sa, "version": version}),
        services=FrozenMap({ORDERS.key: ORDERS.ports}) if svc else FrozenMap(),
    )


WEB = pod("web-0", "1.1", "node-1", "web")
ORDERS_PODS = [
    pod("orders-v1-0", "1.2", "node-2", "orders", "v1", svc=True),
    pod("orders-v2-0", "1.3", "node-2", "orders", "v2", svc=True),
]


FAILURES: dict[str, int] = {}  # /fail and /reset counts by key, shared by every app


def _should_fail(app_name: str, path: str) -> bool:
    query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if "=" in p)
    if "only" in query and query["only"] != app_name:
        return False
    key = query.get("key", "")
    FAILURES[key] = FAILURES.get(key, 0) + 1
    limit = int(query.get("n", "-1"))
    return limit < 0 or FAILURES[key] <= limit


@dataclass
class App:
    """The HTTP and TCP app of one pod."""

    name: str
    version: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    grpc_server: Any = None
    ws_server: Any = None
    grpc_echo: echo.Echo | None = None
    hanging: asyncio.Event = field(default_factory=asyncio.Event)  # a /hang request came
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)  # and its caller went away

    async def start(self) -> None:
        self.servers.append(await asyncio.start_server(self._http, str(self.address), 8080))
        self.servers.append(await asyncio.start_server(self._tcp, str(self.address), TCP_PORT))
        self.grpc_server, self.grpc_echo = await echo.serve(str(self.address), GRPC_PORT, self.name)
        self.ws_server = await websockets.asyncio.server.serve(
            self._websocket, str(self.address), WS_PORT, max_size=None
        )

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()
        if self.grpc_server is not None:
            await self.grpc_server.stop(0)
        if self.ws_server is not None:
            self.ws_server.close()
            await self.ws_server.wait_closed()

    async def _websocket(self, connection: websockets.asyncio.server.ServerConnection) -> None:
        path = connection.request.path if connection.request else "?"
        await connection.send(f"hello from {self.name} {path}")
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in connection:
                await connection.send(message)

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        peer = writer.get_extra_info("peername")[0]

        async def event() -> Any:
            while (ev := conn.next_event()) is h11.NEED_DATA:
                conn.receive_data(await reader.read(262144))
            return ev

        async def send(*events: Any) -> None:
            for ev in events:
                writer.write(conn.send(ev) or b"")
            await writer.drain()

        try:
            while True:
                request = await event()
                if not isinstance(request, h11.Request):
                    break
                path = request.target.decode()
                headers = {k.decode(): v.decode() for k, v in request.headers}
                self.requests.append({"path": path, "headers": headers, "peer": peer})
                if path.startswith("/hang"):  # until the caller goes away
                    self.hanging.set()
                    try:
                        while await reader.read(65536):
                            pass
                    finally:
                        self.hung_up.set()
                    break
                if path.startswith("/reset") and _should_fail(self.name, path):
                    writer.transport.abort()
                    break
                if path.startswith("/fail") and _should_fail(self.name, path):
                    code = int(dict(
                        p.split("=", 1) for p in path.partition("?")[2].split("&") if "=" in p
                    ).get("code", "503"))  # fmt: skip
                    while isinstance(await event(), h11.Data):
                        pass
                    await send(
                        h11.Response(status_code=code, headers=[("content-length", "4")]),
                        h11.Data(data=b"fail"),
                        h11.EndOfMessage(),
                    )
                elif path.startswith("/echo"):
                    await send(h11.Response(status_code=200, headers=[]))
                    while isinstance(ev := await event(), h11.Data):
                        await send(h11.Data(data=ev.data))
                    await send(h11.EndOfMessage())
                else:
                    received = 0
                    while isinstance(ev := await event(), h11.Data):
                        received += len(ev.data)
                    if path.startswith("/bytes"):
                        n = int(path.split("n=", 1)[1])
                        await send(
                            h11.Response(status_code=200, headers=[("content-length", str(n))])
                        )
                        chunk = b"\0" * 262144
                        while n > 0:
                            await send(h11.Data(data=chunk[: min(n, len(chunk))]))
                            n -= len(chunk)
                        await send(h11.EndOfMessage())
                    else:
                        if path.startswith("/slow"):
                            await asyncio.sleep(int(path.split("ms=", 1)[1]) / 1000)
                        body = json.dumps(
                            {
                                "name": self.name,
                                "version": self.version,
                                "path": path,
                                "received": received,
                                "headers": headers,
                                "peer": peer,
                            }
                        ).encode()
                        await send(
                            h11.Response(
                                status_code=200,
                                headers=[
                                    ("content-type", "application/json"),
                                    ("content-length", str(len(body))),
                                ],
                            ),
                            h11.Data(data=body),
                            h11.EndOfMessage(),
                        )
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            writer.close()


class Entry:
    """TCP in, HBONE out to the waypoint for ``target`` as ``certificate`` (the source ztunnel's job)."""

    def __init__(
        self, certificate: WorkloadCertificate, waypoint: SpiffeId, target: SocketAddress
    ) -> None:
        self.certificate = certificate
        self.waypoint = waypoint
        self.target = target
        self.pool = ConnectionPool()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            self._protocol, str(WEB.addresses[0]), 0
        )
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{WEB.addresses[0]}:{self.port}"

    def _protocol(self) -> asyncio.Protocol:
        return _EntryProtocol(self)

    async def open(self, peer: tuple[str, int]) -> HboneStream:
        return await self.pool.open_stream(
            source=self.certificate,
            destination=SocketAddress(WAYPOINT_IP, 15008),
            expected=[self.waypoint],
            request=ConnectRequest(
                authority=self.target,
                forwarded_for=SocketAddress(
                    WEB.addresses[0], peer[1]
                ),  # the pod, as ztunnel knows it
            ),
        )

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await self.pool.close()


class _EntryProtocol(asyncio.Protocol):
    """Holds the client's bytes until the HBONE stream is open, then hands over to TcpRelay."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.early: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.relay: TcpRelay | None = None
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.ensure_future(self._connect(self.transport.get_extra_info("peername")))
        self.entry._tasks.add(task)
        task.add_done_callback(self.entry._tasks.discard)

    async def _connect(self, peer: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            stream = await self.entry.open(peer)
        except Exception:
            self.transport.abort()
            return
        relay = TcpRelay(stream)
        relay.connection_made(self.transport)
        self.transport.set_protocol(relay)
        relay.start()
        for data in self.early:
            relay.data_received(data)
        self.transport.resume_reading()


@dataclass
class WaypointMesh:
    ca: CertificateAuthority
    state: ProxyState
    waypoint: Waypoint
    ztunnel: Ztunnel
    apps: list[App]
    web_cert: WorkloadCertificate

    def entry(self, target: SocketAddress | None = None) -> Entry:
        return Entry(
            self.web_cert,
            self.waypoint.identity,
            target or SocketAddress(ORDERS.addresses[0], 80),
        )

    async def scrape(self) -> str:
        host, port = self.waypoint.admin_addresses["metrics"]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await reader.read(-1)
        writer.close()
        return data.split(b"\r\n\r\n", 1)[1].decode()


def signer(ca: CertificateAuthority) -> Any:
    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    return sign


async def start_mesh(
    ca: CertificateAuthority, **waypoint_options: Any
) -> AsyncIterator[WaypointMesh]:
    """Destination ztunnel (node-2) with the orders pods and their apps, and the waypoint."""
    state = ProxyState("waypoint-node")
    resources: list[Workload | Service] = [ORDERS, UNBOUND, WEB, *ORDERS_PODS]
    state.apply(resources, [])
    zt_state = ProxyState("node-2")
    zt_state.apply(resources, [])
    zt_manager = CertificateManager(signer(ca))
    wp_manager = CertificateManager(signer(ca))
    ztunnel = Ztunnel("node-2", str(ip("0.2")), zt_state, zt_manager, ports=(0, 0, 0))
    apps = [App(w.name, w.canonical_revision, w.addresses[0]) for w in ORDERS_PODS]
    for app in apps:
        await app.start()
    await ztunnel.start()
    waypoint = Waypoint(
        "waypoint", NS, [WAYPOINT_IP], state, wp_manager, ports=(0, 0, 0), **waypoint_options
    )
    await waypoint.start()
    web_cert = ca.issue(WEB.identity, __import__("datetime").timedelta(hours=1))
    try:
        yield WaypointMesh(ca, state, waypoint, ztunnel, apps, web_cert)
    finally:
        await waypoint.close()
        await ztunnel.close()
        for app in apps:
            await app.close()
        await zt_manager.close()
        await wp_manager.close()
