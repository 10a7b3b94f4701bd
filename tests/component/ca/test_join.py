"""``ambient node join``: a one-time token buys a node certificate, over server-only TLS."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from ambient.identity import SpiffeId, load_pem_chain
from ambient.identity.certs import spiffe_ids_in_certificate
from ambient.identity.jointokens import JoinTokens
from ambient.identity.node import DEFAULT_NODE_TTL, NodeAuthority, node_name_of
from ambient.identity.nodecreds import NodeCredentials
from ambient.xds.ca_client import CaClientError, join_node
from tests.component.ca.conftest import SERVICE_LOG, Clock, Join, warnings_of


async def test_join_gives_node_credentials(
    join: Join, nodes: NodeAuthority, tokens: JoinTokens, tmp_path: Path
) -> None:
    creds = await join("node-1")
    leaf = load_pem_chain(creds.chain_pem)[0]
    assert creds.node == "node-1" == node_name_of(leaf)
    assert spiffe_ids_in_certificate(leaf) == ["spiffe://cluster.local/ns/istio-system/sa/ztunnel"]
    assert creds.identity == SpiffeId.parse(spiffe_ids_in_certificate(leaf)[0])
    assert creds.roots_pem == nodes.roots_pem()
    assert nodes.verify_node_certificate(creds.chain_pem) == "node-1"
    lifetime = creds.not_after - creds.not_before
    assert DEFAULT_NODE_TTL <= lifetime <= DEFAULT_NODE_TTL + timedelta(minutes=1, seconds=1)
    [info] = tokens.tokens()
    assert info.node == "node-1" and info.used is not None
    creds.save(tmp_path / "node-1")
    assert NodeCredentials.load(tmp_path / "node-1", "node-1") == creds


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(timedelta(days=2), timedelta(days=2)), (timedelta(days=90), DEFAULT_NODE_TTL)],
)
async def test_join_honours_and_caps_the_requested_lifetime(
    join_address: str,
    tokens: JoinTokens,
    nodes: NodeAuthority,
    ttl: timedelta,
    expected: timedelta,
) -> None:
    token = tokens.create("node-1")
    creds = await join_node(join_address, token, "node-1", nodes.roots_pem(), ttl=ttl)
    skew = creds.not_after - creds.not_before - expected
    assert timedelta(0) <= skew <= timedelta(minutes=1, seconds=1)


async def test_a_token_is_used_once(
    join_address: str, tokens: JoinTokens, nodes: NodeAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    token = tokens.create("node-1")
    await join_node(join_address, token, "node-1", nodes.roots_pem())
    with pytest.raises(CaClientError) as err:
        await join_node(join_address, token, "node-1", nodes.roots_pem())
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    message = "node node-1 may not join: the join token for node node-1 was already used at"
    assert message in str(err.value)
    assert any(message in line for line in warnings_of(caplog, SERVICE_LOG))
    assert token not in caplog.text


async def test_an_expired_token_is_refused(
    join_address: str, tokens: JoinTokens, nodes: NodeAuthority, token_clock: Clock
) -> None:
    token = tokens.create("node-1", ttl=timedelta(minutes=5))
    token_clock.advance(timedelta(minutes=5))
    with pytest.raises(CaClientError) as err:
        await join_node(join_address, token, "node-1", nodes.roots_pem())
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "the join token for node node-1 expired at" in str(err.value)


@pytest.mark.parametrize("token", [secrets.token_urlsafe(32), "short", "x" * 500, ""])
async def test_unknown_or_missing_tokens_are_refused(
    join_address: str, nodes: NodeAuthority, token: str
) -> None:
    with pytest.raises(CaClientError) as err:
        await join_node(join_address, token, "node-1", nodes.roots_pem())
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    expected = "send the join token as" if not token else "unknown join token"
    assert f"node node-1 may not join: {expected}" in str(err.value)


async def test_a_malformed_token_is_not_sent(join_address: str, nodes: NodeAuthority) -> None:
    with pytest.raises(ValueError, match="the join token for node node-1 is malformed"):
        await join_node(join_address, "abc\ndef", "node-1", nodes.roots_pem())


async def test_a_token_is_bound_to_its_node(
    join_address: str, tokens: JoinTokens, nodes: NodeAuthority
) -> None:
    token = tokens.create("node-1")
    with pytest.raises(CaClientError, match="the join token is for node node-1, not node-2"):
        await join_node(join_address, token, "node-2", nodes.roots_pem())
    creds = await join_node(join_address, token, "node-1", nodes.roots_pem())  # still unused
    assert creds.node == "node-1"


async def test_join_checks_the_server_before_sending_the_token(
    join_address: str, tokens: JoinTokens, nodes: NodeAuthority
) -> None:
    token = tokens.create("node-1")
    impostor_roots = NodeAuthority.generate().roots_pem()
    with pytest.raises(CaClientError) as err:
        await join_node(join_address, token, "node-1", impostor_roots, timeout=5)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    [info] = tokens.tokens()
    assert info.used is None
    await join_node(join_address, token, "node-1", nodes.roots_pem())
