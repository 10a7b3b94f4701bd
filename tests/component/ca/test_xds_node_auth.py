"""The xDS server behind the same node credentials: a stream may only claim its own node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from ambient.identity import CertificateAuthority
from ambient.identity.node import CONTROL_PLANE_HOSTNAME, NodeAuthority
from ambient.identity.nodecreds import NodeCredentials
from ambient.xds.ca_service import CaService, node_claim_check
from ambient.xds.codec import ADDRESS_TYPE_URL
from ambient.xds.proto import core_pb2, discovery_pb2
from ambient.xds.server import SERVICE, XdsServer
from tests.component.ca.conftest import Join, shop_plane


@pytest.fixture
async def xds_address(
    mesh_ca: CertificateAuthority, nodes: NodeAuthority, service: CaService
) -> AsyncIterator[str]:
    xds = XdsServer(
        shop_plane(mesh_ca),
        credentials=service.server_credentials(mutual=True),
        authorize_node=node_claim_check(nodes),
    )
    port = await xds.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await xds.stop(0)


async def first_response(
    address: str, creds: NodeCredentials, claimed: str
) -> discovery_pb2.DeltaDiscoveryResponse:
    credentials = grpc.ssl_channel_credentials(
        creds.roots_pem, creds.private_key_pem, creds.chain_pem
    )
    options = [("grpc.ssl_target_name_override", CONTROL_PLANE_HOSTNAME)]
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        stream = channel.stream_stream(
            f"/{SERVICE}/DeltaAggregatedResources",
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )(timeout=10)
        await stream.write(
            discovery_pb2.DeltaDiscoveryRequest(
                node=core_pb2.Node(id=claimed), type_url=ADDRESS_TYPE_URL
            )
        )
        response: discovery_pb2.DeltaDiscoveryResponse = await stream.read()
        stream.cancel()
        return response


async def test_a_node_streams_as_itself(join: Join, xds_address: str) -> None:
    response = await first_response(xds_address, await join("node-1"), "node-1")
    assert response.type_url == ADDRESS_TYPE_URL and response.resources


async def test_a_node_may_not_claim_another(join: Join, xds_address: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first_response(xds_address, await join("node-1"), "node-2")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == (
        "the xDS stream claims node 'node-2', but its client certificate is for node 'node-1'"
    )
