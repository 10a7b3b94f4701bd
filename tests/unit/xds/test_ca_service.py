"""CaService request handling without a network: a fake servicer context (fails closed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from ambient.controlplane import NotAuthorized
from ambient.identity import (
    CertificateAuthority,
    SpiffeId,
    generate_key_and_csr,
    load_pem_chain,
)
from ambient.identity.certs import spiffe_ids_in_certificate
from ambient.identity.jointokens import JoinTokens
from ambient.identity.node import NodeAuthority
from ambient.identity.nodecreds import generate_node_key_and_csr
from ambient.xds.ca_service import (
    IMPERSONATED_IDENTITY,
    NODE_NAME,
    CaService,
    node_claim_check,
)
from ambient.xds.proto.ca_pb2 import IstioCertificateRequest, IstioCertificateResponse

WEB = SpiffeId.workload("shop", "web")
LOG = "ambient.xds.ca_service"


class Aborted(Exception):
    def __init__(self, code: Any, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass
class Metadatum:
    key: str
    value: str


@dataclass
class Context:
    """The parts of ``grpc.aio.ServicerContext`` the service uses."""

    cert_pem: bytes | None = None
    metadata: list[Metadatum] = field(default_factory=list)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.cert_pem]} if self.cert_pem else {}

    def invocation_metadata(self) -> list[Metadatum]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    async def abort(self, code: Any, details: str) -> None:
        raise Aborted(code, details)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture(scope="module")
def nodes() -> NodeAuthority:
    return NodeAuthority.generate()


@pytest.fixture(scope="module")
def node_1(nodes: NodeAuthority) -> Context:
    return Context(nodes.sign_node_csr("node-1", generate_node_key_and_csr()[1]))


def allow_web_on_node_1(node: str, identity: SpiffeId) -> None:
    if (node, identity) != ("node-1", WEB):
        raise NotAuthorized("not here")


def service(ca: CertificateAuthority, nodes: NodeAuthority, **kw: Any) -> CaService:
    return CaService(allow_web_on_node_1, ca, nodes=nodes, **kw)


def request(
    identity: SpiffeId | None = WEB,
    csr_for: SpiffeId | None = WEB,
    seconds: int = 0,
    meta: dict[str, Any] | None = None,
) -> IstioCertificateRequest:
    csr = generate_key_and_csr(csr_for)[1] if csr_for else generate_node_key_and_csr()[1]
    message = IstioCertificateRequest(csr=csr.decode(), validity_duration=seconds)
    if identity is not None:
        message.metadata.update({IMPERSONATED_IDENTITY: identity.uri})
    message.metadata.update(meta or {})
    return message


async def refused(call: Any, message: IstioCertificateRequest, context: Context) -> Aborted:
    with pytest.raises(Aborted) as err:
        await call(message, context)
    return err.value


async def test_a_plain_function_authorizes(
    ca: CertificateAuthority, nodes: NodeAuthority, node_1: Context
) -> None:
    response = await service(ca, nodes).create_certificate(request(), node_1)
    assert isinstance(response, IstioCertificateResponse)
    *chain, roots = response.cert_chain
    assert spiffe_ids_in_certificate(load_pem_chain(chain[0].encode())[0]) == [WEB.uri]
    assert roots.encode() == ca.roots_pem()


async def test_a_refusal_names_node_and_identity(
    ca: CertificateAuthority,
    nodes: NodeAuthority,
    node_1: Context,
    caplog: pytest.LogCaptureFixture,
) -> None:
    orders = SpiffeId.workload("shop", "orders")
    err = await refused(service(ca, nodes).create_certificate, request(orders, orders), node_1)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED
    assert err.details == f"node node-1 may not obtain a certificate for {orders}: not here"
    assert caplog.records[-1].levelname == "WARNING"
    assert caplog.records[-1].getMessage() == (
        "refused CreateCertificate from ipv4:127.0.0.1:40000 (PERMISSION_DENIED): " + err.details
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: request(seconds=-1),
            "node node-1: validity_duration must not be negative, got -1",
        ),
        (lambda: request(identity=None, csr_for=None), "node node-1 named no identity"),
        (
            lambda: _with_metadata(request(identity=None), IMPERSONATED_IDENTITY, 7.0),
            "node node-1: request metadata ImpersonatedIdentity must be a string",
        ),
        (
            lambda: _with_metadata(request(identity=None), IMPERSONATED_IDENTITY, "spiffe://x/y"),
            "node node-1 asked for invalid SPIFFE id 'spiffe://x/y'",
        ),
        (
            lambda: IstioCertificateRequest(csr="garbage", metadata={"fields": {}}),
            "node node-1: the CSR is not a valid PEM CSR",
        ),
        (
            lambda: IstioCertificateRequest(csr="caf\u00e9"),
            "node node-1: the CSR is not ASCII PEM",
        ),
    ],
)
async def test_bad_requests_are_invalid_arguments(
    ca: CertificateAuthority, nodes: NodeAuthority, node_1: Context, make: Any, message: str
) -> None:
    err = await refused(service(ca, nodes).create_certificate, make(), node_1)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details.startswith(message)


def _with_metadata(
    message: IstioCertificateRequest, key: str, value: Any
) -> IstioCertificateRequest:
    message.metadata.update({key: value})
    return message


async def test_a_caller_without_a_node_certificate_is_unauthenticated(
    ca: CertificateAuthority, nodes: NodeAuthority
) -> None:
    svc = service(ca, nodes)
    for call in (svc.create_certificate, svc.renew):
        err = await refused(call, request(), Context())
        assert err.code == grpc.StatusCode.UNAUTHENTICATED
        assert err.details.startswith("the caller presented no client certificate")


async def test_an_authorizer_that_fails_fails_closed(
    ca: CertificateAuthority,
    nodes: NodeAuthority,
    node_1: Context,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(node: str, identity: SpiffeId) -> None:
        raise KeyError("index")

    svc = CaService(broken, ca, nodes=nodes)
    err = await refused(svc.create_certificate, request(), node_1)
    assert err.code == grpc.StatusCode.INTERNAL
    assert err.details == "the control plane failed to handle CreateCertificate: KeyError"
    assert caplog.records[-1].levelno == logging.ERROR and caplog.records[-1].exc_info


async def test_join_refusals(
    ca: CertificateAuthority, nodes: NodeAuthority, tmp_path: Path
) -> None:
    without = await refused(service(ca, nodes).join, request(meta={NODE_NAME: "node-1"}), Context())
    assert without.code == grpc.StatusCode.UNIMPLEMENTED
    assert without.details == (
        "node node-1 may not join: this control plane has no join tokens configured"
    )
    svc = service(ca, nodes, tokens=JoinTokens(tmp_path, nodes))
    bad_name = await refused(svc.join, request(meta={NODE_NAME: "Node 1"}), Context())
    assert bad_name.code == grpc.StatusCode.INVALID_ARGUMENT
    no_token = await refused(
        svc.join, request(), Context(metadata=[Metadatum("authorization", "Basic abc")])
    )
    assert no_token.code == grpc.StatusCode.UNAUTHENTICATED
    assert no_token.details == (
        "a node that did not give its name may not join: send the join token as "
        "'authorization: Bearer <token>'"
    )


def test_settings_are_checked(ca: CertificateAuthority, nodes: NodeAuthority) -> None:
    with pytest.raises(ValueError, match="default_ttl <= max_ttl"):
        service(ca, nodes, default_ttl=timedelta(hours=48))
    with pytest.raises(ValueError, match="node_ttl and server_ttl"):
        service(ca, nodes, node_ttl=timedelta(0))
    with pytest.raises(ValueError, match=r"node PKI trust domain 'example\.org' differs"):
        service(ca, NodeAuthority.generate("example.org"))


def test_an_xds_stream_must_claim_its_certificate_s_node(
    nodes: NodeAuthority, node_1: Context
) -> None:
    check = node_claim_check(nodes)
    check(node_1, "node-1")
    with pytest.raises(NotAuthorized) as err:
        check(node_1, "node-2")
    assert str(err.value) == (
        "the xDS stream claims node 'node-2', but its client certificate is for node 'node-1'"
    )
    with pytest.raises(NotAuthorized, match="node 'node-1' may not open an xDS stream: the caller"):
        check(Context(), "node-1")
