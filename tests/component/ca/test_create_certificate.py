"""CreateCertificate over mutual TLS: a node gets certificates only for its own pods."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ambient.identity import (
    CertificateAuthority,
    CertificateManager,
    SpiffeId,
    TrustBundle,
    WorkloadCertificate,
    generate_key_and_csr,
    load_pem_chain,
)
from ambient.identity.certs import (
    load_private_key,
    spiffe_ids_in_certificate,
    utc_now,
    verify_chain,
)
from ambient.identity.jointokens import JoinTokens
from ambient.identity.node import NODE_NAME_OID, NodeAuthority, node_identity
from ambient.identity.nodecreds import NodeCredentials, generate_node_key_and_csr
from ambient.xds.ca_client import CaClient, CaClientError, join_node
from ambient.xds.ca_service import (
    CREATE_CERTIFICATE_METHOD,
    IMPERSONATED_IDENTITY,
    CaService,
)
from ambient.xds.proto.ca_pb2 import IstioCertificateRequest, IstioCertificateResponse
from tests.component.ca.conftest import (
    CLIENT_LOG,
    ORDERS,
    SERVICE_LOG,
    WEB,
    Clock,
    Join,
    shop_plane,
    warnings_of,
)


async def test_a_node_gets_certificates_for_its_pods(
    join: Join, address: str, mesh_ca: CertificateAuthority
) -> None:
    for node, identity in (("node-1", WEB), ("node-2", ORDERS)):
        async with CaClient(address, await join(node)) as client:
            chain, roots = await client.issue(identity, generate_key_and_csr(identity)[1])
        leaf = load_pem_chain(chain)[0]
        assert spiffe_ids_in_certificate(leaf) == [identity.uri]
        assert roots == mesh_ca.roots_pem()
        verify_chain(load_pem_chain(chain), TrustBundle.from_pem(roots).roots)


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (ORDERS, "(it runs on node-2)"),
        (SpiffeId.workload("shop", "ghost"), "(no pod has that identity)"),
    ],
)
async def test_an_identity_not_on_the_node_is_permission_denied(
    join: Join, address: str, caplog: pytest.LogCaptureFixture, identity: SpiffeId, reason: str
) -> None:
    async with CaClient(address, await join("node-1")) as client:
        with pytest.raises(CaClientError) as err:
            await client.issue(identity, generate_key_and_csr(identity)[1])
    expected = (
        f"node 'node-1' may not obtain a certificate for {identity}: no pod with that "
        f"identity is scheduled on 'node-1' {reason}"
    )
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details == expected
    assert str(err.value) == (
        f"certificate for {identity} (node node-1) refused by control plane {address} "
        f"(PERMISSION_DENIED): {expected}"
    )
    [server_line] = warnings_of(caplog, SERVICE_LOG)
    assert "refused CreateCertificate from ipv4:127.0.0.1:" in server_line
    assert server_line.endswith(f"(PERMISSION_DENIED): {expected}")
    assert warnings_of(caplog, CLIENT_LOG) == [str(err.value)]


async def test_the_identity_may_come_from_the_csr(
    join: Join, address: str, nodes: NodeAuthority
) -> None:
    creds = await join("node-2")
    csr = generate_key_and_csr(ORDERS)[1].decode()
    response = await _raw_call(address, creds, IstioCertificateRequest(csr=csr))
    assert spiffe_ids_in_certificate(
        x509.load_pem_x509_certificate(response.cert_chain[0].encode())
    ) == [ORDERS.uri]
    # ImpersonatedIdentity wins; a CSR asking for another name is then refused.
    request = IstioCertificateRequest(csr=generate_key_and_csr(WEB)[1].decode())
    request.metadata.update({IMPERSONATED_IDENTITY: ORDERS.uri})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_call(address, creds, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        f"cannot sign the certificate for {ORDERS} requested by node node-2: CSR for {ORDERS} "
        f"asks for other names: {WEB}"
    )


@pytest.mark.parametrize(
    ("ttl", "lifetime"),
    [
        (timedelta(minutes=10), timedelta(minutes=10)),
        (None, timedelta(hours=24)),
        (timedelta(hours=48), timedelta(hours=24)),
    ],
)
async def test_validity_duration_is_honoured_up_to_the_maximum(
    join: Join, address: str, ttl: timedelta | None, lifetime: timedelta
) -> None:
    async with CaClient(address, await join("node-1"), ttl=ttl) as client:
        chain, _ = await client.issue(WEB, generate_key_and_csr(WEB)[1])
    leaf = load_pem_chain(chain)[0]
    skew = leaf.not_valid_after_utc - leaf.not_valid_before_utc - lifetime  # backdated 1 min
    assert timedelta(minutes=1) <= skew <= timedelta(minutes=1, seconds=1)


# -- who may call ---------------------------------------------------------------------------


def _credentials(node: str, key_pem: bytes, chain_pem: bytes, roots_pem: bytes) -> NodeCredentials:
    """Credentials as given, unchecked (a forger's)."""
    leaf = load_pem_chain(chain_pem)[0]
    return NodeCredentials(
        node, key_pem, chain_pem, roots_pem, leaf.not_valid_before_utc, leaf.not_valid_after_utc
    )


def _real_root(tmp_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    directory = tmp_path / "controlplane" / "node-ca"
    key = load_private_key((directory / "root-key.pem").read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return load_pem_chain((directory / "root-cert.pem").read_bytes())[0], key


def _forge(
    tmp_path: Path, san: str, node: str | None, age: timedelta = timedelta(minutes=1)
) -> NodeCredentials:
    """A clientAuth certificate from the real node root with any SAN and node name.

    It was issued ``age`` ago and is valid for an hour from then.
    """
    root, root_key = _real_root(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now() - age
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=True
        )
    )
    if node is not None:
        der = bytes([0x0C, len(node)]) + node.encode()
        builder = builder.add_extension(
            x509.UnrecognizedExtension(NODE_NAME_OID, der), critical=False
        )
    cert = builder.sign(root_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _credentials(
        node or "node-1",
        key_pem,
        cert.public_bytes(serialization.Encoding.PEM),
        root.public_bytes(serialization.Encoding.PEM),
    )


def _node_cert_from(authority: NodeAuthority, node: str = "node-1") -> NodeCredentials:
    key_pem, csr = generate_node_key_and_csr()
    return _credentials(node, key_pem, authority.sign_node_csr(node, csr), authority.roots_pem())


def _other_node_ca(
    tmp_path: Path, mesh_ca: CertificateAuthority, service: CaService
) -> NodeCredentials:
    return _node_cert_from(NodeAuthority.generate())


def _mesh_workload_cert(
    tmp_path: Path, mesh_ca: CertificateAuthority, service: CaService
) -> NodeCredentials:
    cert = mesh_ca.issue(node_identity())  # even with the ztunnel identity, from the mesh root
    return _credentials("node-1", cert.private_key_pem, cert.chain_pem, cert.roots_pem)


def _expired_node_cert(
    tmp_path: Path, mesh_ca: CertificateAuthority, service: CaService
) -> NodeCredentials:
    return _forge(tmp_path, node_identity().uri, "node-1", age=timedelta(hours=2))


def _server_cert(
    tmp_path: Path, mesh_ca: CertificateAuthority, service: CaService
) -> NodeCredentials:
    cert = service.server_certificate()  # serverAuth only
    return _credentials("node-1", cert.private_key_pem, cert.chain_pem, cert.roots_pem)


@pytest.mark.parametrize(
    "forge", [_other_node_ca, _mesh_workload_cert, _expired_node_cert, _server_cert]
)
async def test_client_certificates_not_from_the_node_pki_are_refused_at_tls(
    server: object,
    address: str,
    tmp_path: Path,
    mesh_ca: CertificateAuthority,
    service: CaService,
    nodes: NodeAuthority,
    caplog: pytest.LogCaptureFixture,
    forge: object,
) -> None:
    creds = forge(tmp_path, mesh_ca, service)  # type: ignore[operator]
    request = IstioCertificateRequest(csr=generate_key_and_csr(WEB)[1].decode())
    request.metadata.update({IMPERSONATED_IDENTITY: WEB.uri})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_call(address, creds, request, roots=nodes.roots_pem())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not [r for r in caplog.records if r.name == SERVICE_LOG]  # never reached the service


@pytest.mark.parametrize(
    ("san", "node", "reason"),
    [
        (node_identity().uri, None, "it names no node"),
        (WEB.uri, "node-1", f"its names are ['{WEB.uri}'], expected exactly {node_identity().uri}"),
    ],
)
async def test_a_node_root_certificate_must_be_a_node_certificate(
    address: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    san: str,
    node: str | None,
    reason: str,
) -> None:
    async with CaClient(address, _forge(tmp_path, san, node)) as client:
        with pytest.raises(CaClientError) as err:
            await client.issue(WEB, generate_key_and_csr(WEB)[1])
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details.startswith("client certificate (")
    assert err.value.details.endswith(f"is not a node certificate of this control plane: {reason}")
    assert any(err.value.details in line for line in warnings_of(caplog, SERVICE_LOG))


async def test_the_join_port_issues_no_workload_certificates(
    join: Join, join_address: str, nodes: NodeAuthority
) -> None:
    creds = await join("node-1")  # a node certificate is not even asked for there
    request = IstioCertificateRequest(csr=generate_key_and_csr(WEB)[1].decode())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _raw_call(join_address, creds, request)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "the caller presented no client certificate" in (err.value.details() or "")


# -- with a CertificateManager ----------------------------------------------------------------


async def test_a_certificate_manager_renews_through_the_client(
    nodes: NodeAuthority, tokens: JoinTokens
) -> None:
    clock = Clock()  # the mesh CA's and the manager's: workload certificates age at will
    ca = CertificateAuthority.generate(clock=clock)
    plane = shop_plane(ca)
    asked: list[tuple[str, SpiffeId]] = []

    def authorize(node: str, identity: SpiffeId) -> None:
        asked.append((node, identity))
        plane.authorize(node, identity)

    service = CaService(authorize, ca, nodes=nodes, tokens=tokens)
    server = await service.start("127.0.0.1:0", join_address="127.0.0.1:0")
    try:
        creds = await join_node(
            f"127.0.0.1:{server.join_port}", tokens.create("node-1"), "node-1", nodes.roots_pem()
        )
        client = CaClient(f"127.0.0.1:{server.port}", creds, ttl=timedelta(hours=1))
        async with client, CertificateManager(client.issue, clock=clock) as manager:
            fetched: asyncio.Queue[WorkloadCertificate] = asyncio.Queue()
            manager.subscribe(fetched.put_nowait)
            first = await manager.get(WEB)
            assert (
                timedelta(0)
                <= first.lifetime() - timedelta(hours=1, minutes=1)
                <= timedelta(seconds=1)
            )
            clock.advance(timedelta(hours=2))  # expired: the next get() renews
            second = await manager.get(WEB)
            assert second is not first and not second.is_expired(clock())
            assert [await fetched.get(), await fetched.get()] == [first, second]
            assert second.roots_pem == ca.roots_pem()
        assert asked == [("node-1", WEB), ("node-1", WEB)]
    finally:
        await server.stop(None)


async def _raw_call(
    address: str,
    creds: NodeCredentials | None,
    request: IstioCertificateRequest,
    roots: bytes | None = None,
) -> IstioCertificateResponse:
    """One CreateCertificate call with ``creds`` as client certificate (or none)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=roots or (creds.roots_pem if creds else None),
        private_key=creds.private_key_pem if creds else None,
        certificate_chain=creds.chain_pem if creds else None,
    )
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
        call = channel.unary_unary(
            CREATE_CERTIFICATE_METHOD,
            request_serializer=IstioCertificateRequest.SerializeToString,
            response_deserializer=IstioCertificateResponse.FromString,
        )
        response: IstioCertificateResponse = await call(request, timeout=10)
        return response
