"""A real ztunnel's inbound (15008) under HTTP/2 abuse from a peer with a valid mesh
certificate: a raw attacker (hyperframe) against the pod's listener, the application
counting the connections ztunnel opens to it."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from ambient.identity.ca import CertificateAuthority
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.state.proxy import ProxyState
from ambient.state.workload import TunnelProtocol, Workload
from ambient.ztunnel.proxy import Ztunnel
from tests.h2attack import ENHANCE_YOUR_CALM, RawH2
from tests.pki import make_ca

BASE = 40 + (os.getpid() % 200)
APP_PORT = 8080


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"127.{BASE}.{text}")


def pod(name: str, addr: str, node: str, sa: str) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/shop/{name}",
        name=name,
        namespace="shop",
        addresses=(ip(addr),),
        service_account=sa,
        node=node,
        tunnel_protocol=TunnelProtocol.HBONE,
        workload_name=name,
        canonical_name=name,
        canonical_revision="v1",
    )


WEB = pod("web-0", "1.1", "node-1", "web")
ORDERS = pod("orders-0", "1.2", "node-2", "orders")


@dataclass
class Node:
    ca: CertificateAuthority
    ztunnel: Ztunnel
    accepted: list[int]  # connections the application accepted (one element each)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    ca = make_ca(tmp_path)

    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    manager = CertificateManager(sign)
    state = ProxyState("node-2")
    state.apply([WEB, ORDERS], [])
    accepted: list[int] = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(app, str(ORDERS.addresses[0]), APP_PORT)
    ztunnel = Ztunnel("node-2", str(ip("0.2")), state, manager, ports=(0, 0, 0))
    await ztunnel.start()
    try:
        yield Node(ca, ztunnel, accepted)
    finally:
        await ztunnel.close()
        server.close()
        await server.wait_closed()
        await manager.close()


async def test_rapid_reset_at_ztunnel_dials_the_app_for_none(node: Node) -> None:
    cert = node.ca.issue(WEB.identity, timedelta(hours=1))
    target = f"{ORDERS.addresses[0]}:{APP_PORT}"
    raw = await RawH2.connect(str(ORDERS.addresses[0]), 15008, cert)
    for sid in range(1, 2 * 5000, 2):
        raw.connect_headers(sid, target)
        raw.rst(sid)
    raw.write_nowait()
    legit = await RawH2.connect(str(ORDERS.addresses[0]), 15008, cert)
    legit.connect_headers(1, target)
    await legit.flush()
    async with asyncio.timeout(30):
        goaway = await raw.goaway()
        answer = await legit.read_frame()
        while answer is not None and answer.type != 0x1:  # until the response HEADERS
            answer = await legit.read_frame()
    assert goaway is not None and goaway.goaway_code == ENHANCE_YOUR_CALM
    assert answer is not None and answer.stream_id == 1  # the legitimate tunnel was answered
    raw.close()
    legit.close()
    # Dials only where a TLS read split a CONNECT from its reset (then aborted at once).
    assert len(node.accepted) < 50, len(node.accepted)


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) leaves no room to test raising the soft one")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_ztunnel_raises_the_open_files_limit_at_start(
    low_soft_limit: int, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path)

    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    manager = CertificateManager(sign)
    ztunnel = Ztunnel("node-2", str(ip("0.2")), ProxyState("node-2"), manager, ports=(0, 0, 0))
    await ztunnel.start()
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert soft == hard == low_soft_limit or (hard == resource.RLIM_INFINITY and soft > 1024), (
            soft,
            hard,
        )
    finally:
        await ztunnel.close()
        await manager.close()
