"""Node certificates are renewed by presenting them; the server certificate is reissued."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from ambient.identity import CertificateAuthority, generate_key_and_csr, load_pem_chain
from ambient.identity.jointokens import JoinTokens
from ambient.identity.node import NodeAuthority, node_name_of
from ambient.identity.nodecreds import NodeCredentials
from ambient.xds.ca_client import CaClient, CaClientError, join_node
from ambient.xds.ca_service import CaService
from tests.component.ca.conftest import CLIENT_LOG, WEB, Clock, Join, shop_plane, warnings_of


async def test_a_node_renews_its_certificate_by_presenting_it(
    join: Join, address: str, nodes: NodeAuthority, tmp_path: Path
) -> None:
    creds = await join("node-1")
    saved: list[NodeCredentials] = []
    async with CaClient(address, creds, on_node_renewed=saved.append) as client:
        fresh = await client.renew_node(ttl=timedelta(days=7))
        assert client.credentials is fresh and saved == [fresh]
        assert fresh.node == "node-1" == node_name_of(load_pem_chain(fresh.chain_pem)[0])
        assert fresh.private_key_pem != creds.private_key_pem
        assert (
            timedelta(days=7) <= fresh.not_after - fresh.not_before <= timedelta(days=7, minutes=2)
        )
        assert nodes.verify_node_certificate(fresh.chain_pem) == "node-1"
        await client.issue(WEB, generate_key_and_csr(WEB)[1])  # over the new certificate
    async with CaClient(address, creds) as old:  # the old one stays valid until it expires
        await old.issue(WEB, generate_key_and_csr(WEB)[1])


async def test_the_client_renews_the_node_certificate_past_half_life(
    join: Join, address: str
) -> None:
    creds = await join("node-1")
    clock = Clock()
    saved: list[NodeCredentials] = []
    async with CaClient(address, creds, clock=clock, on_node_renewed=saved.append) as client:
        await client.issue(WEB, generate_key_and_csr(WEB)[1])
        assert saved == []
        clock.now = creds.refresh_at()
        await client.issue(WEB, generate_key_and_csr(WEB)[1])
        assert saved == [client.credentials] and client.credentials is not creds
        clock.now = client.credentials.refresh_at() - timedelta(seconds=1)
        await client.issue(WEB, generate_key_and_csr(WEB)[1])
        assert len(saved) == 1  # the new one is not due yet


async def test_a_failed_renewal_keeps_the_current_certificate_until_it_expires(
    join: Join, address: str, caplog: pytest.LogCaptureFixture
) -> None:
    creds = await join("node-1")
    clock = Clock()
    clock.now = creds.refresh_at()

    def broken(_: NodeCredentials) -> None:
        raise AssertionError("never called: the renewal fails")

    async with CaClient(address, creds, clock=clock, on_node_renewed=broken) as client:
        client._renew = _failing_renewal  # type: ignore[method-assign]
        chain, _ = await client.issue(WEB, generate_key_and_csr(WEB)[1])
        assert chain and client.credentials is creds
        assert any(
            "renewing the node certificate of node-1 failed; using the current one" in line
            for line in warnings_of(caplog, CLIENT_LOG)
        )
        clock.now = creds.not_after
        with pytest.raises(CaClientError, match="join the node again with a new token"):
            await client.issue(WEB, generate_key_and_csr(WEB)[1])


async def _failing_renewal(ttl: timedelta | None) -> NodeCredentials:
    raise CaClientError("renewal of the node certificate of node-1 refused (UNAVAILABLE): down")


async def test_the_server_certificate_is_reissued_at_half_life(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()  # starts a day behind, so every certificate is valid in real time too
    clock.advance(-timedelta(days=1))
    directory = tmp_path / "elsewhere"
    nodes = NodeAuthority.load_or_create(directory, clock=clock)
    tokens = JoinTokens(directory / "nodes", nodes)
    ca = CertificateAuthority.generate()
    service = CaService(
        shop_plane(ca), ca, nodes=nodes, tokens=tokens, server_ttl=timedelta(days=2)
    )
    first = service.server_certificate()
    server = await service.start("127.0.0.1:0", join_address="127.0.0.1:0")
    try:
        creds = await join_node(
            f"127.0.0.1:{server.join_port}", tokens.create("node-1"), "node-1", nodes.roots_pem()
        )
        assert service.server_certificate() is first
        clock.advance(timedelta(days=1))  # now: past the server certificate's half-life
        caplog.set_level(logging.INFO, "ambient.xds.ca_service")
        async with CaClient(f"127.0.0.1:{server.port}", creds) as client:  # a new handshake
            await client.issue(WEB, generate_key_and_csr(WEB)[1])
        assert "reissued the control plane's server certificate" in caplog.text
        assert service.server_certificate() is not first
    finally:
        await server.stop(None)


async def test_renewal_needs_the_mutual_tls_port(join: Join, join_address: str) -> None:
    creds = await join("node-1")
    async with CaClient(join_address, creds) as client:  # no client certificate asked there
        with pytest.raises(CaClientError) as err:
            await client.renew_node()
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "presented no client certificate" in err.value.details
