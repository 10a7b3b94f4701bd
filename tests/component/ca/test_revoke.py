"""Node membership over the real certificate service and xDS server (issue 12 item 9).

A join token names its node; ``ambient node revoke`` (``revoke_node``) ends the node's
xDS stream at once and its certificate is refused from then on (renewal, workload
certificates, a new stream), until it joins again with a new token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ambient.identity import CertificateAuthority, generate_key_and_csr
from ambient.identity.jointokens import JoinTokens
from ambient.identity.members import NodeMembers
from ambient.identity.node import CONTROL_PLANE_HOSTNAME, NodeAuthority
from ambient.identity.nodecreds import NodeCredentials
from ambient.local.revocation import follow_revocations, revoke_node
from ambient.xds.ca_client import CaClient, CaClientError, join_node
from ambient.xds.ca_service import CaService, node_claim_check
from ambient.xds.codec import ADDRESS_TYPE_URL
from ambient.xds.proto import core_pb2, discovery_pb2
from ambient.xds.server import SERVICE, XdsServer
from tests.component.ca.conftest import ORDERS, WEB, Join, shop_plane


@pytest.fixture
def members(tmp_path: Path) -> NodeMembers:
    return NodeMembers(tmp_path / "controlplane" / "nodes")


@pytest.fixture
def service(
    mesh_ca: CertificateAuthority, nodes: NodeAuthority, tokens: JoinTokens, members: NodeMembers
) -> CaService:
    return CaService(shop_plane(mesh_ca), mesh_ca, nodes=nodes, tokens=tokens, members=members)


@pytest.fixture
async def xds_address(
    mesh_ca: CertificateAuthority, nodes: NodeAuthority, service: CaService, members: NodeMembers
) -> AsyncIterator[str]:
    xds = XdsServer(
        shop_plane(mesh_ca),
        credentials=service.server_credentials(mutual=True),
        authorize_node=node_claim_check(nodes, members),
    )
    port = await xds.start("127.0.0.1:0")
    follow = asyncio.ensure_future(follow_revocations(members, xds))  # as the control plane
    yield f"127.0.0.1:{port}"
    follow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follow
    await xds.stop(0)


@contextlib.asynccontextmanager
async def xds_stream(address: str, creds: NodeCredentials) -> AsyncIterator[object]:
    """An open xDS stream of ``creds``' node, past its first response."""
    credentials = grpc.ssl_channel_credentials(
        creds.roots_pem, creds.private_key_pem, creds.chain_pem
    )
    options = [("grpc.ssl_target_name_override", CONTROL_PLANE_HOSTNAME)]
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        call = channel.stream_stream(
            f"/{SERVICE}/DeltaAggregatedResources",
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )(timeout=30)
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                node=core_pb2.Node(id=creds.node), type_url=ADDRESS_TYPE_URL
            )
        )
        first = await call.read()
        assert first.type_url == ADDRESS_TYPE_URL
        yield call
        call.cancel()


async def test_a_token_for_node_1_does_not_join_node_2(
    join_address: str, tokens: JoinTokens, nodes: NodeAuthority, members: NodeMembers
) -> None:
    token = tokens.create("node-1")
    with pytest.raises(CaClientError, match="the join token is for node node-1, not node-2"):
        await join_node(join_address, token, "node-2", nodes.roots_pem())
    assert members.members() == {}
    await join_node(join_address, token, "node-1", nodes.roots_pem())
    assert members.members() == {"node-1": 1}


async def test_revoke_ends_the_stream_and_refuses_the_node(
    join: Join, address: str, xds_address: str, tmp_path: Path
) -> None:
    node_1, node_2 = await join("node-1"), await join("node-2")
    async with xds_stream(xds_address, node_1) as stream, xds_stream(xds_address, node_2):
        assert revoke_node(tmp_path / "controlplane", "node-1") is True
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(10):  # ended at once: well within this bound
                while True:
                    await stream.read()  # type: ignore[attr-defined]
        assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "node-1 is not in the mesh" in (ended.value.details() or "")
        # node-2 is untouched: it still gets certificates
        async with CaClient(address, node_2) as other:
            await other.issue(ORDERS, generate_key_and_csr(ORDERS)[1])
    async with CaClient(address, node_1) as client:
        with pytest.raises(CaClientError) as renewal:
            await client.renew_node()
        assert renewal.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "node-1 is not in the mesh" in str(renewal.value)
        with pytest.raises(CaClientError):
            await client.issue(WEB, generate_key_and_csr(WEB)[1])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with xds_stream(xds_address, node_1):
            pass
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert revoke_node(tmp_path / "controlplane", "node-1") is False  # not a member any more
    # Back in with a new token; the revoked certificate stays refused.
    again = await join("node-1")
    async with CaClient(address, again) as client:
        await client.issue(WEB, generate_key_and_csr(WEB)[1])
    async with CaClient(address, node_1) as client:
        with pytest.raises(CaClientError):
            await client.issue(WEB, generate_key_and_csr(WEB)[1])


async def test_a_renewed_certificate_is_honoured_and_so_is_the_old_until_it_expires(
    join: Join, address: str, members: NodeMembers
) -> None:
    creds = await join("node-1")
    async with CaClient(address, creds) as client:
        fresh = await client.renew_node()
    assert members.members() == {"node-1": 2}
    for held in (creds, fresh):
        async with CaClient(address, held) as client:
            await client.issue(WEB, generate_key_and_csr(WEB)[1])
