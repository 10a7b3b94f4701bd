"""Node credentials: the node PKI, node certificates, join tokens (``ambient.identity.node``)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ambient.identity import (
    CertificateAuthority,
    CertificateError,
    SpiffeId,
    generate_key_and_csr,
    load_pem_chain,
)
from ambient.identity.certs import spiffe_ids_in_certificate, utc_now
from ambient.identity.jointokens import JoinTokenError, JoinTokens, TokenStoreError
from ambient.identity.node import (
    CONTROL_PLANE_HOSTNAME,
    NODE_NAME_OID,
    NodeAuthority,
    NodeCredentialError,
    control_plane_identity,
    node_identity,
    node_name_of,
    validate_node_name,
)
from ambient.identity.nodecreds import NodeCredentials, generate_node_key_and_csr

ZTUNNEL = "spiffe://cluster.local/ns/istio-system/sa/ztunnel"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authority(tmp_path: Path, clock: Clock) -> NodeAuthority:
    return NodeAuthority.load_or_create(tmp_path, clock=clock)


@pytest.fixture
def tokens(tmp_path: Path, authority: NodeAuthority) -> JoinTokens:
    return JoinTokens(tmp_path / "nodes", authority)


def node_cert(authority: NodeAuthority, node: str = "node-1", **kw: timedelta) -> bytes:
    return authority.sign_node_csr(node, generate_node_key_and_csr()[1], **kw)


def leaf(pem: bytes) -> x509.Certificate:
    return load_pem_chain(pem)[0]


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["node-1", "a", "worker.example.com", "n" * 253])
def test_valid_node_names(name: str) -> None:
    assert validate_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Node-1", "-node", "node-", "node_1", "node 1", "n" * 254, "nöde", 7, None]
)
def test_invalid_node_names(name: object) -> None:
    with pytest.raises(ValueError, match="node name"):
        validate_node_name(name)


def test_identities_are_valid_spiffe_ids() -> None:
    assert SpiffeId.parse(ZTUNNEL) == node_identity()
    assert control_plane_identity("example.org").uri == (
        "spiffe://example.org/ns/istio-system/sa/istiod"
    )


# -- the node PKI ---------------------------------------------------------------------------


def test_a_node_certificate(authority: NodeAuthority, clock: Clock) -> None:
    cert = leaf(node_cert(authority))
    assert node_name_of(cert) == "node-1"
    assert spiffe_ids_in_certificate(cert) == [ZTUNNEL]
    assert cert.subject == x509.Name([])
    assert cert.extensions.get_extension_for_oid(NODE_NAME_OID).critical is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - clock() <= timedelta(days=30, seconds=1)
    assert authority.verify_node_certificate(node_cert(authority)) == "node-1"


def test_long_node_names_round_trip(authority: NodeAuthority) -> None:
    name = ".".join(["a" * 60] * 4)  # 243 characters: a two-byte DER length
    assert authority.verify_node_certificate(node_cert(authority, name)) == name


def test_the_csr_may_name_the_ztunnel_identity_only(authority: NodeAuthority) -> None:
    _, csr = generate_key_and_csr(node_identity())
    assert node_name_of(leaf(authority.sign_node_csr("node-1", csr))) == "node-1"
    _, csr = generate_key_and_csr(SpiffeId.workload("shop", "web"))
    with pytest.raises(CertificateError, match="CSR of node node-1 asks for names"):
        authority.sign_node_csr("node-1", csr)
    with pytest.raises(CertificateError, match="not a valid PEM CSR"):
        authority.sign_node_csr("node-1", b"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n")
    with pytest.raises(ValueError, match="invalid node name"):
        authority.sign_node_csr("Node_1", generate_node_key_and_csr()[1])


def test_the_server_certificate(authority: NodeAuthority) -> None:
    server = authority.issue_server_certificate()
    cert = leaf(server.chain_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [CONTROL_PLANE_HOSTNAME]
    assert spiffe_ids_in_certificate(cert) == [control_plane_identity().uri]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(NodeCredentialError, match="lacks clientAuth"):
        authority.verify_node_certificate(server.chain_pem)


def _forge(
    authority_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    *,
    sans: list[x509.GeneralName],
    node_der: bytes | None,
    ca: bool = False,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    if node_der is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(NODE_NAME_OID, node_der), critical=False
        )
    return builder.sign(authority_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def forger(tmp_path: Path, authority: NodeAuthority) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(
        (tmp_path / "node-ca" / "root-key.pem").read_bytes(), None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


URI = x509.UniformResourceIdentifier
NODE_1 = b"\x0c\x06node-1"


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"sans": [URI(ZTUNNEL)], "node_der": None}, "it names no node"),
        ({"sans": [], "node_der": NODE_1}, "its names are none"),
        ({"sans": [URI(ZTUNNEL), x509.DNSName("x")], "node_der": NODE_1}, "its names are"),
        (
            {"sans": [URI("spiffe://cluster.local/ns/a/sa/b")], "node_der": NODE_1},
            "expected exactly",
        ),
        ({"sans": [URI(ZTUNNEL)], "node_der": NODE_1, "ca": True}, "it is a CA certificate"),
        (
            {"sans": [URI(ZTUNNEL)], "node_der": NODE_1, "usage": ExtendedKeyUsageOID.SERVER_AUTH},
            "lacks clientAuth",
        ),
        ({"sans": [URI(ZTUNNEL)], "node_der": b"\x13\x06node-1"}, "not a DER UTF8String"),
        ({"sans": [URI(ZTUNNEL)], "node_der": b"\x0c\x07node-1"}, "trailing or missing bytes"),
        ({"sans": [URI(ZTUNNEL)], "node_der": b"\x0c\x81\x06node-1"}, "malformed length"),
        ({"sans": [URI(ZTUNNEL)], "node_der": b"\x0c\x06Node_1"}, "invalid node name"),
    ],
)
def test_refused_node_certificates(
    authority: NodeAuthority,
    forger: ec.EllipticCurvePrivateKey,
    kw: dict[str, object],
    reason: str,
) -> None:
    pem = _forge(forger, authority.root_certificate, **kw)  # type: ignore[arg-type]
    with pytest.raises(NodeCredentialError, match=reason):
        authority.verify_node_certificate(pem)


def test_certificates_from_other_roots_are_refused(authority: NodeAuthority) -> None:
    other = NodeAuthority.generate()
    with pytest.raises(NodeCredentialError, match="not signed by any trusted root"):
        authority.verify_node_certificate(node_cert(other))
    workload = CertificateAuthority.generate().issue(node_identity())
    with pytest.raises(NodeCredentialError, match="not a node certificate of this control plane"):
        authority.verify_node_certificate(workload.chain_pem)
    with pytest.raises(NodeCredentialError, match="no PEM certificates"):
        authority.verify_node_certificate(b"junk")


def test_expired_node_certificates_are_refused(authority: NodeAuthority, clock: Clock) -> None:
    pem = node_cert(authority, ttl=timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    with pytest.raises(
        NodeCredentialError, match="node certificate of this control plane: expired at"
    ):
        authority.verify_node_certificate(pem)


def test_the_root_is_kept_in_the_state_dir(tmp_path: Path, authority: NodeAuthority) -> None:
    again = NodeAuthority.load_or_create(tmp_path)
    assert again.roots_pem() == authority.roots_pem()
    assert again.verify_node_certificate(node_cert(authority)) == "node-1"
    key = tmp_path / "node-ca" / "root-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(
        CertificateError, match=r"node CA of trust domain cluster\.local, not 'other\.org'"
    ):
        NodeAuthority.load_or_create(tmp_path, trust_domain="other.org")
    key.chmod(0o640)
    with pytest.raises(CertificateError, match="accessible by group or others"):
        NodeAuthority.load_or_create(tmp_path)
    key.unlink()
    with pytest.raises(CertificateError, match=r"its key .* is missing"):
        NodeAuthority.load_or_create(tmp_path)


# -- node credentials -----------------------------------------------------------------------


def credentials(authority: NodeAuthority, node: str = "node-1") -> NodeCredentials:
    key, csr = generate_node_key_and_csr()
    return NodeCredentials.from_pem(
        node, key, authority.sign_node_csr(node, csr), authority.roots_pem()
    )


def test_credentials_are_saved_privately(tmp_path: Path, authority: NodeAuthority) -> None:
    creds = credentials(authority)
    assert "PRIVATE" not in repr(creds)
    creds.save(tmp_path / "node")
    assert stat.S_IMODE((tmp_path / "node" / "node-key.pem").stat().st_mode) == 0o600
    assert NodeCredentials.load(tmp_path / "node") == creds
    assert creds.identity == node_identity()
    with pytest.raises(
        NodeCredentialError, match="holds the credentials of node node-1, not node-2"
    ):
        NodeCredentials.load(tmp_path / "node", "node-2")
    os.chmod(tmp_path / "node" / "node-key.pem", 0o644)
    with pytest.raises(CertificateError, match="accessible by group or others"):
        NodeCredentials.load(tmp_path / "node")


def test_credentials_are_checked(authority: NodeAuthority) -> None:
    creds = credentials(authority)
    other_key, _ = generate_node_key_and_csr()
    with pytest.raises(NodeCredentialError, match="does not match its private key"):
        NodeCredentials.from_pem("node-1", other_key, creds.chain_pem, creds.roots_pem)
    with pytest.raises(NodeCredentialError, match="names node node-1"):
        NodeCredentials.from_pem("node-2", creds.private_key_pem, creds.chain_pem, creds.roots_pem)
    with pytest.raises(CertificateError, match="not signed by any trusted root"):
        NodeCredentials.from_pem(
            "node-1", creds.private_key_pem, creds.chain_pem, NodeAuthority.generate().roots_pem()
        )
    with pytest.raises(NodeCredentialError, match="expired at"):
        NodeCredentials.from_pem(
            "node-1",
            creds.private_key_pem,
            creds.chain_pem,
            creds.roots_pem,
            now=creds.not_after,
        )
    assert creds.refresh_at() == creds.not_before + (creds.not_after - creds.not_before) / 2


# -- join tokens ----------------------------------------------------------------------------


def test_a_token_is_redeemed_once(tokens: JoinTokens, authority: NodeAuthority) -> None:
    token = tokens.create("node-1")
    node, chain = tokens.redeem(token, generate_node_key_and_csr()[1])
    assert node == "node-1"
    assert authority.verify_node_certificate(chain) == "node-1"
    with pytest.raises(JoinTokenError, match="for node node-1 was already used at"):
        tokens.redeem(token, generate_node_key_and_csr()[1])


def test_tokens_are_stored_hashed_and_private(tokens: JoinTokens) -> None:
    token = tokens.create("node-1")
    text = tokens.path.read_text()
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in json.loads(text)["tokens"]
    assert stat.S_IMODE(tokens.path.stat().st_mode) == 0o600


def test_tokens_are_shared_through_the_state_dir(
    tmp_path: Path, tokens: JoinTokens, authority: NodeAuthority
) -> None:
    token = tokens.create("node-1")  # e.g. by the CLI, while the control plane runs
    elsewhere = JoinTokens(tmp_path / "nodes", authority)
    assert elsewhere.redeem(token, generate_node_key_and_csr()[1])[0] == "node-1"
    with pytest.raises(JoinTokenError, match="already used"):
        tokens.redeem(token, generate_node_key_and_csr()[1])


def test_expired_and_unknown_tokens(tokens: JoinTokens, clock: Clock) -> None:
    token = tokens.create("node-1", ttl=timedelta(minutes=10))
    clock.advance(timedelta(minutes=10))
    with pytest.raises(JoinTokenError, match="the join token for node node-1 expired at"):
        tokens.redeem(token, generate_node_key_and_csr()[1])
    clock.advance(timedelta(days=1))  # then forgotten
    with pytest.raises(JoinTokenError, match="unknown join token"):
        tokens.redeem(token, generate_node_key_and_csr()[1])
    assert tokens.tokens() == []
    for bad in ["", "short", "ä" * 40, None]:
        with pytest.raises(JoinTokenError, match="unknown join token"):
            tokens.redeem(bad, generate_node_key_and_csr()[1])  # type: ignore[arg-type]


def test_a_failed_redemption_leaves_the_token_unused(tokens: JoinTokens) -> None:
    token = tokens.create("node-1")
    with pytest.raises(JoinTokenError, match="is for node node-1, not node-2"):
        tokens.redeem(token, generate_node_key_and_csr()[1], node="node-2")
    with pytest.raises(CertificateError, match="CSR of node node-1"):
        tokens.redeem(token, b"not a csr")
    [info] = tokens.tokens()
    assert info.used is None
    assert tokens.redeem(token, generate_node_key_and_csr()[1], node="node-1")[0] == "node-1"


def test_token_lifetime_and_store_errors(tokens: JoinTokens) -> None:
    with pytest.raises(ValueError, match="between 1 second and 7 days"):
        tokens.create("node-1", ttl=timedelta(days=8))
    with pytest.raises(ValueError, match="invalid node name"):
        tokens.create("Node 1")
    tokens.create("node-1")
    tokens.path.write_text("{not json")
    with pytest.raises(TokenStoreError, match="is malformed"):
        tokens.create("node-1")
