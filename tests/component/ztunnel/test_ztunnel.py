"""Two ztunnels on loopback, workloads pushed by hand, curl as the client through SOCKS5."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ambient.config.frozen import FrozenMap
from ambient.identity.ca import CertificateAuthority
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.state.proxy import ProxyState
from ambient.state.workload import Port, Service, TunnelProtocol, Workload
from ambient.ztunnel.authorization import InboundConnection, Verdict
from ambient.ztunnel.proxy import Ztunnel
from tests.pki import make_ca

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

BASE = 40 + (__import__("os").getpid() % 200)  # a private 127.<BASE>.x.y range per test run


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"127.{BASE}.{text}")


ORDERS_SVC = Service(
    name="orders",
    namespace="shop",
    hostname="orders.shop.svc.cluster.local",
    addresses=(ip("2.1"),),
    ports=(Port(80, 8080),),
)


def pod(
    name: str, addr: str, node: str, sa: str, *, enrolled: bool = True, svc: bool = False
) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/shop/{name}",
        name=name,
        namespace="shop",
        addresses=(ip(addr),),
        service_account=sa,
        node=node,
        tunnel_protocol=TunnelProtocol.HBONE if enrolled else TunnelProtocol.NONE,
        workload_name=name.rsplit("-", 1)[0],
        canonical_name=name.rsplit("-", 1)[0],
        canonical_revision="v1",
        services=FrozenMap({ORDERS_SVC.key: (Port(80, 8080),)}) if svc else FrozenMap(),
    )


WEB = pod("web-0", "1.1", "node-1", "web")
ORDERS = [
    pod("orders-0", "1.2", "node-2", "orders", svc=True),
    pod("orders-1", "1.3", "node-2", "orders", svc=True),
]


@dataclass
class Mesh:
    ca: CertificateAuthority
    states: dict[str, ProxyState]
    ztunnels: dict[str, Ztunnel]
    apps: list[asyncio.AbstractServer]
    seen: list[tuple[str, str]]  # (app name, peer ip)

    def push(self, *resources: Workload | Service, removed: tuple[str, ...] = ()) -> None:
        for state in self.states.values():
            state.apply(resources, removed)

    async def settle(self) -> None:
        for zt in self.ztunnels.values():
            await zt.reconcile()


async def http_app(
    name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, seen: list[tuple[str, str]]
) -> asyncio.AbstractServer:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        peer = writer.get_extra_info("peername")[0]
        seen.append((name, peer))
        body = json.dumps({"name": name, "peer": peer}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, str(address), 8080)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    ca = make_ca(tmp_path)

    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    managers = {n: CertificateManager(sign) for n in ("node-1", "node-2")}
    states = {n: ProxyState(n) for n in managers}
    for state in states.values():
        state.apply([ORDERS_SVC, WEB, *ORDERS], [])
    ztunnels = {
        n: Ztunnel(n, str(ip(f"0.{i + 1}")), states[n], managers[n], ports=(0, 0, 0))
        for i, n in enumerate(managers)
    }
    seen: list[tuple[str, str]] = []
    apps = [await http_app(w.name, w.addresses[0], seen) for w in ORDERS]
    for zt in ztunnels.values():
        await zt.start()
    yield Mesh(ca, states, ztunnels, apps, seen)
    for zt in ztunnels.values():
        await zt.close()
    for app in apps:
        app.close()
        await app.wait_closed()
    for m in managers.values():
        await m.close()


async def curl(source: Workload, url: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--socks5-hostname",
        f"{source.addresses[0]}:15080",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, (out or err).decode()


async def test_curl_reaches_service_by_name_over_hbone(mesh: Mesh) -> None:
    code, body = await curl(WEB, "http://orders:80/")
    assert code == 0, body
    reply = json.loads(body)
    assert reply["name"].startswith("orders-")
    assert reply["peer"] == str(WEB.addresses[0])  # the app sees the caller's pod address
    text = (await _get(mesh.ztunnels["node-2"], "metrics", "/metrics")).decode()
    assert 'reporter="destination"' in text
    assert 'source_principal="spiffe://cluster.local/ns/shop/sa/web"' in text
    assert 'connection_security_policy="mutual_tls"' in text
    assert 'destination_service="orders.shop.svc.cluster.local"' in text


async def test_round_robin_spreads_connections(mesh: Mesh) -> None:
    for _ in range(10):
        code, body = await curl(WEB, "http://orders.shop.svc.cluster.local/")
        assert code == 0, body
    names = [name for name, _ in mesh.seen]
    assert names.count("orders-0") == 5 and names.count("orders-1") == 5


async def test_an_endpoint_that_refuses_is_retried_on_another(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    """orders-0's app is gone but its ztunnel does not know yet (still healthy): every
    connection to the service still succeeds — the source ztunnel tries another endpoint
    when the destination answers 503 before a byte went through — over HBONE and over
    plain TCP, and the failed attempts are in the access log."""
    dead = mesh.apps[0]
    dead.close()
    await dead.wait_closed()
    caplog.set_level("INFO", logger="ambient.access")
    for _ in range(6):
        code, body = await curl(WEB, "http://orders:80/")
        assert code == 0, (body, [r.getMessage() for r in caplog.records])
        assert json.loads(body)["name"] == "orders-1"
    logged = [r.getMessage() for r in caplog.records if r.name == "ambient.access"]
    # The CONNECT's 503 in the error field (a bare "503" also matches ephemeral ports).
    failed = [line for line in logged if re.search(r'error="[^"]*: 503 ', line)]
    assert failed, logged
    assert all('dst.workload="orders-0"' in line for line in failed), failed
    mesh.push(replace(WEB, tunnel_protocol=TunnelProtocol.NONE))
    await mesh.settle()
    for _ in range(4):
        code, body = await curl(WEB, "http://orders:80/")
        assert code == 0, body
        assert json.loads(body)["name"] == "orders-1"


async def test_unenrolled_source_goes_plain_tcp(mesh: Mesh) -> None:
    mesh.push(replace(WEB, tunnel_protocol=TunnelProtocol.NONE))
    await mesh.settle()
    code, body = await curl(WEB, f"http://{ORDERS[0].addresses[0]}:8080/")
    assert code == 0, body
    text = (await _get(mesh.ztunnels["node-1"], "metrics", "/metrics")).decode()
    assert 'connection_security_policy="unknown"' in text
    assert 'connection_security_policy="mutual_tls"' not in text


async def test_denied_connection_is_reset(mesh: Mesh) -> None:
    def deny_web(conn: InboundConnection) -> Verdict:
        return Verdict(conn.source_identity != str(WEB.identity), "test policy")

    mesh.ztunnels["node-2"].authorizer = lambda: deny_web
    code, _ = await curl(WEB, "http://orders:80/")
    assert code in (52, 56)  # empty reply / connection reset: the app never saw it
    assert mesh.seen == []
    text = (await _get(mesh.ztunnels["node-2"], "metrics", "/metrics")).decode()
    assert 'response_flags="DENY"' in text


async def test_a_pushed_policy_decides_the_next_connection(mesh: Mesh) -> None:
    """The destination ztunnel remembers verdicts per peer pair; a policy pushed between two
    identical connections must decide the second (and its removal the third)."""
    from tests.unit.authz.helpers import AP, authorization

    deny_web = authorization(
        AP(
            "shop",
            "deny-web",
            {
                "action": "DENY",
                "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}],
            },
        )
    )
    code, body = await curl(WEB, f"http://{ORDERS[0].addresses[0]}:8080/")
    assert code == 0, body
    assert len(mesh.seen) == 1
    for state in mesh.states.values():
        state.apply([], [], [deny_web])
    code, _ = await curl(WEB, f"http://{ORDERS[0].addresses[0]}:8080/")
    assert code in (52, 56)  # reset: the app never saw it
    assert len(mesh.seen) == 1
    for state in mesh.states.values():
        state.apply([], [], policies_removed=[("AuthorizationPolicy", "shop/deny-web")])
    code, body = await curl(WEB, f"http://{ORDERS[0].addresses[0]}:8080/")
    assert code == 0, body
    assert len(mesh.seen) == 2


async def test_config_dump_and_readiness(mesh: Mesh) -> None:
    dump = json.loads(await _get(mesh.ztunnels["node-1"], "admin", "/config_dump"))
    assert {w["name"] for w in dump["workloads"]} == {"web-0", "orders-0", "orders-1"}
    assert dump["services"][0]["endpoints"] == [w.uid for w in ORDERS]
    assert await _get(mesh.ztunnels["node-1"], "readiness", "/healthz/ready") == b"ready\n"


async def test_debug_tasks_shows_connections_and_tasks(mesh: Mesh) -> None:
    code, _ = await curl(WEB, "http://orders:80/")  # an HBONE connection node-1 -> node-2
    assert code == 0
    dump = (await _get(mesh.ztunnels["node-1"], "admin", "/debug/tasks")).decode()
    assert re.search(r"^[1-9]\d* HBONE connections$", dump, re.M), dump
    assert '"side": "client"' in dump and '"windows": [' in dump
    assert re.search(r"^\d+ asyncio tasks$", dump, re.M) and " in AdminServer." in dump


async def _get(zt: Ztunnel, which: str, path: str) -> bytes:
    host, port = zt.admin_addresses[which]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body
