"""Workload certificate objects, keys, CSRs and PEM helpers."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ambient.identity import (
    CertificateError,
    SpiffeId,
    WorkloadCertificate,
    generate_key_and_csr,
    load_pem_chain,
    spiffe_ids_in_certificate,
)
from tests.pki import cert_without_spiffe_san, issue, make_ca

IDENT = SpiffeId.workload("shop", "cart")
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _cert(not_before: datetime, not_after: datetime) -> WorkloadCertificate:
    return WorkloadCertificate(IDENT, b"key", b"chain", b"roots", not_before, not_after)


def test_lifetime_refresh_and_expiry() -> None:
    cert = _cert(T0, T0 + timedelta(hours=24))
    assert cert.lifetime() == timedelta(hours=24)
    assert cert.refresh_at() == T0 + timedelta(hours=12)
    assert not cert.is_expired(T0 + timedelta(hours=23, minutes=59))
    assert cert.is_expired(T0 + timedelta(hours=24))
    assert not _cert(T0, datetime(9999, 1, 1, tzinfo=UTC)).is_expired()


def test_requires_aware_times_and_order() -> None:
    with pytest.raises(ValueError, match="not_before must be timezone-aware"):
        _cert(datetime(2030, 1, 1), T0)
    with pytest.raises(ValueError, match="is not after not_before"):
        _cert(T0, T0)


def test_repr_hides_key() -> None:
    cert = WorkloadCertificate(IDENT, b"SECRET", b"c", b"r", T0, T0 + timedelta(1))
    assert "SECRET" not in repr(cert)
    assert "cart" in repr(cert)


def test_generate_key_and_csr() -> None:
    key_pem, csr_pem = generate_key_and_csr(IDENT)
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([])
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [IDENT.uri]
    assert csr.public_key() == key.public_key()


def test_spiffe_ids_in_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = load_pem_chain(issue(ca, "shop", "cart").chain_pem)[0]
    assert spiffe_ids_in_certificate(leaf) == [IDENT.uri]
    no_san = load_pem_chain(cert_without_spiffe_san(ca).chain_pem)[0]
    assert spiffe_ids_in_certificate(no_san) == []
    assert spiffe_ids_in_certificate(ca.signing_certificate) == []  # no SAN at all


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"", "no PEM certificates found"),
        (b"hello", "no PEM certificates found"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "malformed PEM certificate",
        ),
    ],
)
def test_load_pem_chain_errors(pem: bytes, message: str) -> None:
    with pytest.raises(CertificateError, match=f"my-file: {message}"):
        load_pem_chain(pem, "my-file")


def test_load_pem_chain_keeps_order(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    a, b = issue(ca, "a"), issue(ca, "b")
    certs = load_pem_chain(a.chain_pem + b.chain_pem)
    assert [spiffe_ids_in_certificate(c) for c in certs] == [
        ["spiffe://cluster.local/ns/a/sa/default"],
        ["spiffe://cluster.local/ns/b/sa/default"],
    ]


class TestFromPem:
    """``WorkloadCertificate.from_pem`` is what a CA client trusts: it must fail closed."""

    def test_accepts_and_drops_appended_root(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        key_pem, csr_pem = generate_key_and_csr(IDENT)
        chain = ca.sign_csr(csr_pem, IDENT) + ca.roots_pem()  # Istio appends the root
        cert = WorkloadCertificate.from_pem(IDENT, key_pem, chain, ca.roots_pem())
        assert len(load_pem_chain(cert.chain_pem)) == 1
        assert cert.identity == IDENT

    def test_rejects_wrong_key(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        _, csr_pem = generate_key_and_csr(IDENT)
        other_key, _ = generate_key_and_csr(IDENT)
        chain = ca.sign_csr(csr_pem, IDENT)
        with pytest.raises(CertificateError, match="does not match the private key"):
            WorkloadCertificate.from_pem(IDENT, other_key, chain, ca.roots_pem())

    def test_rejects_other_identity(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        other = SpiffeId.workload("shop", "admin")
        key_pem, csr_pem = generate_key_and_csr(other)
        chain = ca.sign_csr(csr_pem, other)
        with pytest.raises(CertificateError, match=r"names SPIFFE ids .*sa/admin"):
            WorkloadCertificate.from_pem(IDENT, key_pem, chain, ca.roots_pem())

    def test_rejects_untrusted_chain(self, tmp_path: Path) -> None:
        ca, other = make_ca(tmp_path), make_ca(tmp_path / "other")
        key_pem, csr_pem = generate_key_and_csr(IDENT)
        chain = ca.sign_csr(csr_pem, IDENT)
        with pytest.raises(CertificateError, match="not signed by any trusted root"):
            WorkloadCertificate.from_pem(IDENT, key_pem, chain, other.roots_pem())

    def test_rejects_expired(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        key_pem, csr_pem = generate_key_and_csr(IDENT)
        chain = ca.sign_csr(csr_pem, IDENT, timedelta(hours=1))
        later = datetime.now(UTC) + timedelta(hours=2)
        with pytest.raises(CertificateError, match="expired at"):
            WorkloadCertificate.from_pem(IDENT, key_pem, chain, ca.roots_pem(), now=later)

    def test_rejects_garbage(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        key_pem, _ = generate_key_and_csr(IDENT)
        with pytest.raises(CertificateError, match="certificate chain: no PEM"):
            WorkloadCertificate.from_pem(IDENT, key_pem, b"", ca.roots_pem())
        with pytest.raises(CertificateError, match="workload private key: not a valid"):
            WorkloadCertificate.from_pem(IDENT, b"nope", ca.roots_pem(), ca.roots_pem())
