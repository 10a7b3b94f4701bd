"""A hosted waypoint with worker processes sharing its HBONE listener (``waypoint.workers``).

Real processes and sockets on loopback: the waypoint as a node proxy hosts it
(``waypoint_factory(workers=2)``: this process plus one child), a destination HBONE
server with the ``orders`` pod's certificate answering HTTP/1.1, and clients that open
each request on a new HBONE connection (a new TCP connection, which the kernel gives
to either worker). Which worker accepts a connection is the kernel's choice, so each
check that needs the child to have served opens connections until it has, bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from ambient.config import ConfigSet, load_text
from ambient.frozen import FrozenMap
from ambient.hbone.errors import StreamRefused
from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.server import HboneServer
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
from ambient.waypoint.config import L7Config, _HostedWaypoint, waypoint_factory
from ambient.waypoint.workers import ENV, workers_from_env
from tests.pki import make_ca

pytestmark = pytest.mark.slow  # starts a worker process (imports the proxy)

NS = "shop"
NET = f"127.{10 + os.getpid() % 230}.77"
WAYPOINT_IP, ORDERS_IP, VIP, WEB_IP = (f"{NET}.{n}" for n in (1, 2, 3, 4))
ORDERS = Service(
    name="orders",
    namespace=NS,
    hostname=f"orders.{NS}.svc.cluster.local",
    addresses=(ipaddress.IPv4Address(VIP),),
    ports=(Port(80, 8080, AppProtocol.HTTP11),),
    waypoint=GatewayAddress(f"{NS}/waypoint.{NS}.svc.cluster.local"),
)
ATTEMPTS = 64  # connections until the child has served one: 2**-64 that none reaches it


def pod(name: str, address: str, sa: str, **extra: object) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/{NS}/{name}",
        name=name,
        namespace=NS,
        addresses=(ipaddress.IPv4Address(address),),
        service_account=sa,
        node="node-1",
        tunnel_protocol=TunnelProtocol.HBONE,
        **extra,  # type: ignore[arg-type]
    )


WAYPOINT_POD = pod(
    "waypoint-0",
    WAYPOINT_IP,
    "waypoint",
    labels=FrozenMap({"gateway.networking.k8s.io/gateway-name": "waypoint"}),
)
ORDERS_POD = pod("orders-0", ORDERS_IP, "orders", services=FrozenMap({ORDERS.key: ORDERS.ports}))
WEB_POD = pod("web-0", WEB_IP, "web")

DENY_GET = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-get, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {methods: [GET]}}]}]
"""


async def _answer(stream: HboneStream) -> None:
    """The ``orders`` app behind its ztunnel: every HTTP/1.1 request gets ``ok``."""
    stream.respond(Status.OK)
    buffer = b""
    while data := await stream.read():
        buffer += data
        while b"\r\n\r\n" in buffer:
            _, buffer = buffer.split(b"\r\n\r\n", 1)
            stream.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    stream.write_eof()


@dataclass
class Mesh:
    ca: CertificateAuthority
    state: ProxyState
    l7: L7Config
    hosted: _HostedWaypoint
    web: WorkloadCertificate

    async def get(self) -> int:
        """One GET on a new HBONE connection (new TCP) through the waypoint: its status."""
        pool = ConnectionPool()
        try:
            stream = await pool.open_stream(
                source=self.web,
                destination=SocketAddress.parse(f"{WAYPOINT_IP}:15008"),
                expected=[SpiffeId.workload(NS, "waypoint")],
                request=ConnectRequest(
                    authority=SocketAddress.parse(f"{VIP}:80"),
                    forwarded_for=SocketAddress.parse(f"{WEB_IP}:40000"),
                ),
            )
            stream.write(b"GET / HTTP/1.1\r\nhost: orders\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                data = await asyncio.wait_for(stream.read(), 30)
                assert data, f"no answer through the waypoint, got {head!r}"
                head += data
            return int(head.split(b" ", 2)[1])
        finally:
            await pool.close()

    async def child_requests(self, code: int) -> float:
        """Requests with ``code`` the child worker has counted (its own exposition)."""
        assert self.hosted.waypoint.worker_metrics is not None
        (text,) = await self.hosted.waypoint.worker_metrics()
        return _requests(text.decode(), code)

    async def metrics(self) -> str:
        reader, writer = await asyncio.open_connection(WAYPOINT_IP, 15020)
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: waypoint\r\nconnection: close\r\n\r\n")
        body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
        writer.close()
        return body.decode()


def _requests(text: str, code: int) -> float:
    pattern = rf'^istio_requests_total\{{[^}}]*response_code="{code}"[^}}]*\}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    ca = make_ca(tmp_path)

    async def issue(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    orders_cert = ca.issue(ORDERS_POD.identity)
    destination = HboneServer(lambda: orders_cert, _answer)
    await destination.start(ORDERS_IP, 15008)
    state = ProxyState("node-1")
    state.apply([ORDERS, ORDERS_POD, WEB_POD, WAYPOINT_POD], [])
    l7 = L7Config()
    l7.set_config(ConfigSet())
    certificates = CertificateManager(issue)
    hosted = waypoint_factory(state, certificates, l7, workers=2)(WAYPOINT_POD)
    try:
        await hosted.start()
        yield Mesh(ca, state, l7, hosted, ca.issue(WEB_POD.identity))
    finally:
        await hosted.close()
        await destination.close()
        await certificates.close()


async def _until_child_counts(mesh: Mesh, code: int) -> list[int]:
    """GETs on new connections until the child worker has answered one with ``code``."""
    statuses = []
    for _ in range(ATTEMPTS):
        statuses.append(await mesh.get())
        if await mesh.child_requests(code) > 0:
            return statuses
    pytest.fail(f"{ATTEMPTS} connections and the worker process answered none {code}: {statuses}")


async def test_both_processes_serve_and_metrics_are_one_proxys(mesh: Mesh) -> None:
    statuses = await _until_child_counts(mesh, 200)
    assert set(statuses) == {200}
    # The parent served some too, or the listener is not shared.
    for _ in range(ATTEMPTS):
        if _requests(generate_latest(mesh.hosted.waypoint.metrics.registry).decode(), 200):
            break
        statuses.append(await mesh.get())
    else:
        pytest.fail(f"{ATTEMPTS} connections and none reached the parent")
    workers = mesh.hosted.describe()["workers"]
    assert workers["configured"] == 2 and len(set(workers["pids"])) == 2
    # /metrics is one proxy's: each series the sum of both processes'.
    assert _requests(await mesh.metrics(), 200) == len(statuses)


async def test_config_pushes_reach_the_worker(mesh: Mesh) -> None:
    await _until_child_counts(mesh, 200)
    mesh.l7.set_config(load_text(DENY_GET, "deny.yaml", check_refs=False))
    assert mesh.hosted._pool is not None
    await mesh.hosted._pool.flush()  # applied by the child (its channel is in order)
    statuses = await _until_child_counts(mesh, 403)
    assert set(statuses) == {403}, "a process served with the configuration before the push"
    # A state push too: the service no longer uses this waypoint, the CONNECT is refused.
    mesh.state.apply([dataclasses.replace(ORDERS, waypoint=None)], [])
    await mesh.hosted._pool.flush()
    for _ in range(8):
        with pytest.raises(StreamRefused) as refused:
            await mesh.get()
        assert refused.value.status == 400


async def test_close_stops_the_workers(mesh: Mesh) -> None:
    pool = mesh.hosted._pool
    assert pool is not None
    processes = [w.process for w in pool.workers]
    await mesh.hosted.close()
    assert [p.returncode for p in processes] == [0]
    with pytest.raises(OSError):  # nothing listens any more
        await asyncio.open_connection(WAYPOINT_IP, 15008)


async def test_a_worker_whose_parent_is_gone_exits(mesh: Mesh) -> None:
    pool = mesh.hosted._pool
    assert pool is not None
    (worker,) = pool.workers
    worker.alive = False  # as if the parent had died: only its channel ends
    worker.writer.close()
    assert await asyncio.wait_for(worker.process.wait(), 60) == 0
    # Its listener is gone with it: every new connection is the parent's.
    assert [await mesh.get() for _ in range(4)] == [200] * 4


def test_workers_from_env() -> None:
    assert workers_from_env({}) == 1
    assert workers_from_env({ENV: " 3 "}) == 3
    with pytest.raises(ValueError, match="whole number"):
        workers_from_env({ENV: "two"})
    with pytest.raises(ValueError, match="between 1 and 64"):
        workers_from_env({ENV: "0"})
