"""The certificate service with bearer-token callers (the cluster mode's shape), over real
gRPC and TLS: which refusal becomes which status, that the port asks for no client
certificate, and that the node-certificate RPCs are not served.

The tokens here are checked by ``TableTokens``, a test stand-in for ``KubeNodeAuth.verify``
(TokenReview needs an API server: ``tests/kube/controlplane/test_identity*.py`` run the real
one); what is tested is the service's contract with any ``BearerTokens`` verifier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from ambient.controlplane.source import NotAuthorized
from ambient.identity import CertificateAuthority, SpiffeId
from ambient.identity.callers import AuthUnavailable, Caller, Unauthenticated
from ambient.identity.certs import generate_key_and_csr, load_pem_chain, spiffe_ids_in_certificate
from ambient.identity.node import NodeAuthority
from ambient.identity.nodecreds import generate_node_key_and_csr
from ambient.xds.ca_client import CaClient, CaClientError
from ambient.xds.ca_service import RENEW_METHOD, CaServer, CaService
from ambient.xds.callers import BearerTokens
from ambient.xds.proto.ca_pb2 import IstioCertificateRequest, IstioCertificateResponse
from tests.component.ca.conftest import CLIENT_LOG, SERVICE_LOG, warnings_of

WEB = SpiffeId.workload("shop", "web")
DOWN = SpiffeId.workload("shop", "down")


class TableTokens:
    """Test stand-in verifier: a fixed token -> node table, and tokens that fail each way."""

    async def verify(self, token: str) -> Caller:
        if token == "node-1-token":
            return Caller("node-1", "pod istio-system/ztunnel-1")
        if token == "workload-token":
            raise NotAuthorized("the token is of ServiceAccount shop/web, not a node account")
        if token == "unreviewable":
            raise AuthUnavailable("cannot review the token: the API server is unreachable")
        raise Unauthenticated("the API server rejected the token")


class Static:
    def __init__(self, token: str) -> None:
        self.value = token

    async def token(self) -> str:
        return self.value

    def describe(self) -> str:
        return "a fixed token"


async def authorize(node: str, identity: SpiffeId) -> None:
    """``web`` runs on node-1; for ``down`` the pod lookup itself fails."""
    if identity == DOWN:
        raise AuthUnavailable("cannot list its pods: the API server is unreachable")
    if not (node == "node-1" and identity == WEB):
        raise NotAuthorized(f"no pod of {identity} is scheduled on {node}")


@pytest.fixture
async def token_server(
    mesh_ca: CertificateAuthority, nodes: NodeAuthority
) -> AsyncIterator[tuple[CaServer, NodeAuthority]]:
    callers = BearerTokens(TableTokens().verify, "test tokens")
    service = CaService(authorize, mesh_ca, nodes=nodes, authenticator=callers)
    running = await service.start("127.0.0.1:0")
    yield running, nodes
    await running.stop(None)


def client(server: tuple[CaServer, NodeAuthority], token: str) -> CaClient:
    running, nodes = server
    return CaClient.with_token(
        f"127.0.0.1:{running.port}", "node-1", Static(token), nodes.roots_pem(), timeout=5
    )


async def issue(ca: CaClient, identity: SpiffeId) -> list[str]:
    _, csr = generate_key_and_csr(identity)
    chain, _ = await ca.issue(identity, csr)
    return spiffe_ids_in_certificate(load_pem_chain(chain, "issued")[0])


async def test_a_token_over_server_tls_gets_its_nodes_certificate(
    token_server: tuple[CaServer, NodeAuthority],
) -> None:
    async with client(token_server, "node-1-token") as ca:
        assert await issue(ca, WEB) == [WEB.uri]


@pytest.mark.parametrize(
    ("token", "identity", "code", "reason"),
    [
        ("forged", WEB, grpc.StatusCode.UNAUTHENTICATED, "rejected the token"),
        ("workload-token", WEB, grpc.StatusCode.PERMISSION_DENIED, "not a node account"),
        ("unreviewable", WEB, grpc.StatusCode.UNAVAILABLE, "API server is unreachable"),
        (
            "node-1-token",
            SpiffeId.workload("shop", "orders"),
            grpc.StatusCode.PERMISSION_DENIED,
            "no pod of spiffe://cluster.local/ns/shop/sa/orders is scheduled on node-1",
        ),
        ("node-1-token", DOWN, grpc.StatusCode.UNAVAILABLE, "cannot decide whether node node-1"),
    ],
)
async def test_refusals_have_their_status_and_reason_on_both_sides(
    token_server: tuple[CaServer, NodeAuthority],
    caplog: pytest.LogCaptureFixture,
    token: str,
    identity: SpiffeId,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    async with client(token_server, token) as ca:
        with pytest.raises(CaClientError) as caught:
            await issue(ca, identity)
    assert caught.value.code is code and reason in caught.value.details
    assert any(reason in m for m in warnings_of(caplog, SERVICE_LOG))
    assert any(reason in m for m in warnings_of(caplog, CLIENT_LOG))


async def test_no_token_is_unauthenticated(token_server: tuple[CaServer, NodeAuthority]) -> None:
    running, nodes = token_server
    credentials = grpc.ssl_channel_credentials(root_certificates=nodes.roots_pem())
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    _, csr = generate_key_and_csr(WEB)
    async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", credentials, options) as ch:
        call = ch.unary_unary(
            "/istio.v1.auth.IstioCertificateService/CreateCertificate",
            request_serializer=IstioCertificateRequest.SerializeToString,
            response_deserializer=IstioCertificateResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(IstioCertificateRequest(csr=csr.decode()), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer <token>" in str(caught.value.details())

        # No node certificates to renew in this mode (and none could be presented).
        renew = ch.unary_unary(
            RENEW_METHOD,
            request_serializer=IstioCertificateRequest.SerializeToString,
            response_deserializer=IstioCertificateResponse.FromString,
        )
        _, node_csr = generate_node_key_and_csr()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await renew(IstioCertificateRequest(csr=node_csr.decode()), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "nodes authenticate with test tokens" in str(caught.value.details())


def test_a_token_client_needs_a_node_and_roots() -> None:
    with pytest.raises(ValueError, match="not both or neither"):
        CaClient("127.0.0.1:1", None)
    with pytest.raises(ValueError, match="node's name and the roots"):
        CaClient("127.0.0.1:1", None, None, token_source=Static("t"), node="node-1")
