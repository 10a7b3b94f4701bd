"""The certificate authority: self-signed root, plug-in CA files, CSR signing."""

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from ambient.identity import (
    CertificateAuthority,
    CertificateError,
    SpiffeId,
    generate_key_and_csr,
    load_pem_chain,
)
from tests.pki import make_ca, verify_workload_chain, write_plugin_ca

IDENT = SpiffeId.workload("shop", "cart")


class TestSelfSignedRoot:
    def test_created_with_safe_permissions(self, tmp_path: Path) -> None:
        ca = CertificateAuthority.load_or_create(tmp_path)
        ca_dir = tmp_path / "ca"
        assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((ca_dir / "root-key.pem").stat().st_mode) == 0o600
        root = ca.signing_certificate
        assert root.subject == root.issuer
        assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
            "cluster.local"
        )
        assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
        assert root.not_valid_after_utc - root.not_valid_before_utc >= timedelta(days=3650)
        assert len(ca.trust_bundle) == 1
        assert ca.trust_domain == "cluster.local"

    def test_reused_on_restart(self, tmp_path: Path) -> None:
        first = CertificateAuthority.load_or_create(tmp_path)
        second = CertificateAuthority.load_or_create(tmp_path)
        assert second.roots_pem() == first.roots_pem()
        cert = second.issue(IDENT)
        assert verify_workload_chain(cert.chain_pem, first.roots_pem()) == [IDENT.uri]

    def test_other_trust_domain_refuses_stored_root(self, tmp_path: Path) -> None:
        CertificateAuthority.load_or_create(tmp_path)
        with pytest.raises(CertificateError, match=r"root of trust domain cluster.local, not"):
            CertificateAuthority.load_or_create(tmp_path, trust_domain="example.org")

    def test_refuses_world_readable_key(self, tmp_path: Path) -> None:
        CertificateAuthority.load_or_create(tmp_path)
        (tmp_path / "ca" / "root-key.pem").chmod(0o644)
        with pytest.raises(CertificateError, match=r"root-key.pem is accessible .*mode 644"):
            CertificateAuthority.load_or_create(tmp_path)

    def test_refuses_missing_key(self, tmp_path: Path) -> None:
        CertificateAuthority.load_or_create(tmp_path)
        (tmp_path / "ca" / "root-key.pem").unlink()
        with pytest.raises(CertificateError, match=r"root-key.pem is missing"):
            CertificateAuthority.load_or_create(tmp_path)

    def test_refuses_corrupt_cert(self, tmp_path: Path) -> None:
        CertificateAuthority.load_or_create(tmp_path)
        (tmp_path / "ca" / "root-cert.pem").write_bytes(b"garbage")
        with pytest.raises(CertificateError, match=r"root-cert.pem: no PEM certificates"):
            CertificateAuthority.load_or_create(tmp_path)

    def test_bad_trust_domain(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="lowercase letters"):
            CertificateAuthority.load_or_create(tmp_path, trust_domain="Bad Domain")


class TestPluginCA:
    def test_istio_files_issue_verifiable_chain(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        ca = CertificateAuthority.load_or_create(tmp_path / "state", plugin_dir=plugin.directory)
        assert not (tmp_path / "state" / "ca").exists()
        assert ca.trust_bundle.roots == (plugin.root,)
        cert = ca.issue(IDENT)
        chain = load_pem_chain(cert.chain_pem)
        assert chain[1:] == list(plugin.intermediates)  # leaf, intermediate; no root
        assert load_pem_chain(cert.roots_pem) == [plugin.root]
        verified = (
            PolicyBuilder()
            .store(Store([plugin.root]))
            .build_client_verifier()
            .verify(chain[0], chain[1:])
        )
        assert verified.chain == [chain[0], plugin.intermediates[0], plugin.root]
        assert [n.value for n in verified.subjects or []] == [IDENT.uri]

    def test_two_intermediates_and_chain_without_root(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts", levels=2, chain_has_root=False)
        ca = CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)
        chain = load_pem_chain(ca.issue(IDENT).chain_pem)
        assert chain[1:] == list(plugin.intermediates)
        assert verify_workload_chain(ca.issue(IDENT).chain_pem, ca.roots_pem()) == [IDENT.uri]

    def test_cert_chain_without_ca_cert_accepted(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts", levels=2)
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in plugin.intermediates)
        (plugin.directory / "cert-chain.pem").write_bytes(
            pem.split(b"-----END CERTIFICATE-----\n", 1)[1]
        )
        ca = CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)
        assert verify_workload_chain(ca.issue(IDENT).chain_pem, ca.roots_pem()) == [IDENT.uri]

    def test_empty_plugin_dir_falls_back_to_self_signed(self, tmp_path: Path) -> None:
        (tmp_path / "cacerts").mkdir()
        ca = CertificateAuthority.load_or_create(tmp_path, plugin_dir=tmp_path / "cacerts")
        assert (tmp_path / "ca" / "root-cert.pem").exists()
        assert ca.signing_certificate in ca.trust_bundle

    def test_incomplete_plugin_dir(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        (plugin.directory / "cert-chain.pem").unlink()
        with pytest.raises(CertificateError, match=r"incomplete: missing cert-chain.pem"):
            CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)

    def test_key_does_not_match(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        other = write_plugin_ca(tmp_path / "other")
        (plugin.directory / "ca-key.pem").write_bytes((other.directory / "ca-key.pem").read_bytes())
        with pytest.raises(CertificateError, match=r"ca-key.pem does not match .*ca-cert.pem"):
            CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)

    def test_ca_cert_not_a_ca(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        leaf_ca = make_ca(tmp_path)
        key_pem, csr_pem = generate_key_and_csr(IDENT)
        (plugin.directory / "ca-cert.pem").write_bytes(leaf_ca.sign_csr(csr_pem, IDENT))
        (plugin.directory / "ca-key.pem").write_bytes(key_pem)
        with pytest.raises(CertificateError, match=r"ca-cert.pem is not a CA certificate"):
            CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)

    def test_chain_does_not_reach_root(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        other = write_plugin_ca(tmp_path / "other")
        (plugin.directory / "root-cert.pem").write_bytes(
            (other.directory / "root-cert.pem").read_bytes()
        )
        with pytest.raises(
            CertificateError, match=r"cert-chain.pem does not lead from .* to a root in"
        ):
            CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)

    @pytest.mark.parametrize(
        "name", ["ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"]
    )
    def test_garbage_file_is_named(self, tmp_path: Path, name: str) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        (plugin.directory / name).write_bytes(b"not pem\n")
        with pytest.raises(CertificateError, match=rf"cacerts/{name}: "):
            CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)

    def test_expired_ca_cert(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")
        later = datetime.now(UTC) + timedelta(days=400)
        with pytest.raises(CertificateError, match=r"ca-cert.pem expired at"):
            CertificateAuthority.load_or_create(
                tmp_path, plugin_dir=plugin.directory, clock=lambda: later
            )


class TestSignCsr:
    def test_leaf_fields(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        key_pem, csr_pem = generate_key_and_csr(IDENT)
        before = datetime.now(UTC).replace(microsecond=0)
        chain = load_pem_chain(ca.sign_csr(csr_pem, IDENT, timedelta(hours=2)))
        assert len(chain) == 1  # self-signed root CA: no intermediates, never the root
        leaf = chain[0]
        assert leaf.issuer == ca.signing_certificate.subject
        assert leaf.subject == x509.Name([])
        leaf.verify_directly_issued_by(ca.signing_certificate)
        ext = leaf.extensions
        san = ext.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.critical
        assert list(san.value) == [x509.UniformResourceIdentifier(IDENT.uri)]
        bc = ext.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and not bc.value.ca
        ku = ext.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and ku.key_encipherment
        assert not ku.key_cert_sign and not ku.crl_sign
        eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        public_key = leaf.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        private_key = serialization.load_pem_private_key(key_pem, None)
        assert public_key == private_key.public_key()
        assert leaf.not_valid_after_utc - before <= timedelta(hours=2, seconds=1)
        assert leaf.not_valid_after_utc - before >= timedelta(hours=2) - timedelta(seconds=1)
        # backdated for clock skew, but never before the CA itself
        assert leaf.not_valid_before_utc <= before
        assert leaf.not_valid_before_utc >= ca.signing_certificate.not_valid_before_utc
        assert leaf.serial_number != load_pem_chain(ca.sign_csr(csr_pem, IDENT))[0].serial_number

    def test_backdate_one_minute(self, tmp_path: Path) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        CertificateAuthority.load_or_create(tmp_path, clock=lambda: now)  # root from `now`
        skewed = CertificateAuthority.load_or_create(
            tmp_path, clock=lambda: now + timedelta(hours=1)
        )
        _, csr_pem = generate_key_and_csr(IDENT)
        leaf = load_pem_chain(skewed.sign_csr(csr_pem, IDENT))[0]
        assert leaf.not_valid_before_utc == now + timedelta(minutes=59)
        assert leaf.not_valid_after_utc == now + timedelta(hours=25)

    def test_ttl_capped_at_ca_expiry(self, tmp_path: Path) -> None:
        plugin = write_plugin_ca(tmp_path / "cacerts")  # intermediate valid for 365 days
        ca = CertificateAuthority.load_or_create(tmp_path, plugin_dir=plugin.directory)
        _, csr_pem = generate_key_and_csr(IDENT)
        leaf = load_pem_chain(ca.sign_csr(csr_pem, IDENT, timedelta(days=1000)))[0]
        assert leaf.not_valid_after_utc == plugin.intermediates[0].not_valid_after_utc

    def test_two_second_ttl(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        cert = ca.issue(IDENT, ttl=timedelta(seconds=2))
        remaining = cert.not_after - datetime.now(UTC)
        assert timedelta(seconds=1.5) < remaining <= timedelta(seconds=3)  # rounded up to 1 s
        assert not cert.is_expired()
        assert verify_workload_chain(cert.chain_pem, cert.roots_pem) == [IDENT.uri]
        with pytest.raises(VerificationError):
            verify_workload_chain(
                cert.chain_pem, cert.roots_pem, now=cert.not_after + timedelta(seconds=1)
            )

    @pytest.mark.parametrize("ttl", [timedelta(0), timedelta(milliseconds=999), timedelta(-1)])
    def test_rejects_tiny_ttl(self, tmp_path: Path, ttl: timedelta) -> None:
        _, csr_pem = generate_key_and_csr(IDENT)
        with pytest.raises(ValueError, match="ttl must be at least 1 second"):
            make_ca(tmp_path).sign_csr(csr_pem, IDENT, ttl)

    def test_rejects_other_trust_domain(self, tmp_path: Path) -> None:
        evil = SpiffeId.workload("x", "y", "evil.example")
        _, csr_pem = generate_key_and_csr(evil)
        with pytest.raises(CertificateError, match="not in this CA's trust domain"):
            make_ca(tmp_path).sign_csr(csr_pem, evil)

    def test_rejects_csr_for_other_identity(self, tmp_path: Path) -> None:
        _, csr_pem = generate_key_and_csr(SpiffeId.workload("shop", "admin"))
        with pytest.raises(CertificateError, match=r"asks for other names: .*sa/admin"):
            make_ca(tmp_path).sign_csr(csr_pem, IDENT)

    def test_csr_without_san_gets_identity(self, tmp_path: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        pem = make_ca(tmp_path).sign_csr(csr.public_bytes(serialization.Encoding.PEM), IDENT)
        san = load_pem_chain(pem)[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert list(san.value) == [x509.UniformResourceIdentifier(IDENT.uri)]

    def test_rejects_bad_signature(self, tmp_path: Path) -> None:
        _, csr_pem = generate_key_and_csr(IDENT)
        csr = x509.load_pem_x509_csr(csr_pem)
        der = bytearray(csr.public_bytes(serialization.Encoding.DER))
        der[-1] ^= 0x01  # flip a bit in the signature
        tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
        with pytest.raises(CertificateError, match="invalid signature"):
            make_ca(tmp_path).sign_csr(tampered, IDENT)

    def test_rejects_weak_key_and_garbage(self, tmp_path: Path) -> None:
        ca = make_ca(tmp_path)
        key = rsa.generate_private_key(65537, 1024)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        with pytest.raises(CertificateError, match="RSA key of 1024 bits is too weak"):
            ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), IDENT)
        with pytest.raises(CertificateError, match="not a valid PEM CSR"):
            ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n", IDENT)

    def test_refuses_when_ca_expired(self, tmp_path: Path) -> None:
        ca = CertificateAuthority.generate(clock=lambda: datetime(2020, 1, 1, tzinfo=UTC))
        _, csr_pem = generate_key_and_csr(IDENT)
        with pytest.raises(CertificateError, match="CA certificate chain expired"):
            CertificateAuthority(
                ca.signing_certificate,
                ca._signing_key,
                ca.trust_bundle,
                clock=lambda: datetime(2031, 1, 1, tzinfo=UTC),
            ).sign_csr(csr_pem, IDENT)


def test_additional_roots_for_rotation(tmp_path: Path) -> None:
    old = make_ca(tmp_path)
    new = make_ca(tmp_path / "next")
    rotating = old.with_additional_roots(new.trust_bundle)
    assert rotating.trust_bundle.roots == (old.signing_certificate, new.signing_certificate)
    assert old.trust_bundle.roots == (old.signing_certificate,)  # unchanged
    cert = rotating.issue(IDENT)
    assert len(load_pem_chain(cert.roots_pem)) == 2
    # certificates from either root verify against the combined bundle
    for issuer in (rotating, new):
        issued = issuer.issue(IDENT)
        assert verify_workload_chain(issued.chain_pem, rotating.roots_pem()) == [IDENT.uri]
