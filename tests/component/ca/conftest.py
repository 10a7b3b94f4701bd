"""A running certificate service on loopback: mesh CA, node PKI, join tokens, a small mesh.

Pods: ``shop/web`` on node-1, ``shop/orders`` on node-2.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ambient.controlplane import ControlPlane
from ambient.identity import CertificateAuthority, SpiffeId
from ambient.identity.certs import utc_now
from ambient.identity.jointokens import JoinTokens
from ambient.identity.node import NodeAuthority
from ambient.identity.nodecreds import NodeCredentials
from ambient.xds.ca_client import join_node
from ambient.xds.ca_service import CaServer, CaService
from tests.unit.controlplane.manifests import load, namespace, pod, service_account

WEB = SpiffeId.workload("shop", "web")
ORDERS = SpiffeId.workload("shop", "orders")

Join = Callable[[str], Awaitable[NodeCredentials]]


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def shop_plane(ca: CertificateAuthority) -> ControlPlane:
    return ControlPlane(
        ca,
        config=load(
            namespace("shop"),
            service_account("web", "shop"),
            service_account("orders", "shop"),
            pod("web-1", "shop", sa="web", node="node-1"),
            pod("orders-1", "shop", sa="orders", node="node-2"),
        ),
    )


@pytest.fixture
def token_clock() -> Clock:
    return Clock()


@pytest.fixture
def mesh_ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture
def nodes(tmp_path: Path) -> NodeAuthority:
    return NodeAuthority.load_or_create(tmp_path / "controlplane")


@pytest.fixture
def tokens(tmp_path: Path, nodes: NodeAuthority, token_clock: Clock) -> JoinTokens:
    return JoinTokens(tmp_path / "controlplane" / "nodes", nodes, clock=token_clock)


@pytest.fixture
def service(mesh_ca: CertificateAuthority, nodes: NodeAuthority, tokens: JoinTokens) -> CaService:
    return CaService(shop_plane(mesh_ca), mesh_ca, nodes=nodes, tokens=tokens)


@pytest.fixture
async def server(service: CaService) -> AsyncIterator[CaServer]:
    running = await service.start("127.0.0.1:0", join_address="127.0.0.1:0")
    yield running
    await running.stop(None)


@pytest.fixture
def address(server: CaServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def join_address(server: CaServer) -> str:
    return f"127.0.0.1:{server.join_port}"


@pytest.fixture
def join(join_address: str, tokens: JoinTokens, nodes: NodeAuthority) -> Join:
    """Join a node the way ``ambient node join`` would: a fresh token, redeemed over TLS."""

    async def joined(node: str) -> NodeCredentials:
        return await join_node(join_address, tokens.create(node), node, nodes.roots_pem())

    return joined


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The WARNING messages ``logger`` logged."""
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelname == "WARNING"]


SERVICE_LOG = "ambient.xds.ca_service"
CLIENT_LOG = "ambient.xds.ca_client"
