"""Test PKI: CAs, workload certificates, and certificates a server must refuse.

Import as ``from tests.pki import ...``. Certificates the CA would refuse to issue
are forged here with ``cryptography`` and the CA's own key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from ambient.identity import (
    CertificateAuthority,
    SpiffeId,
    WorkloadCertificate,
    load_pem_chain,
    spiffe_ids_in_certificate,
)
from ambient.identity.certs import utc_now

__all__ = [
    "PluginCA",
    "cert_from_unknown_ca",
    "cert_in_other_trust_domain",
    "cert_with_other_trust_domain_san",
    "cert_without_spiffe_san",
    "expired_cert",
    "issue",
    "make_ca",
    "verify_workload_chain",
    "write_pem_files",
    "write_plugin_ca",
]

EVIL_TRUST_DOMAIN = "evil.example"
_PEM = serialization.Encoding.PEM


def make_ca(tmp_path: Path, trust_domain: str = "cluster.local") -> CertificateAuthority:
    """A self-signed CA stored under ``tmp_path`` (one per trust domain)."""
    return CertificateAuthority.load_or_create(
        tmp_path / "pki" / trust_domain, trust_domain=trust_domain
    )


def issue(
    ca: CertificateAuthority,
    ns: str = "default",
    sa: str = "default",
    ttl: timedelta = timedelta(hours=1),
) -> WorkloadCertificate:
    """A valid certificate for ``spiffe://<ca td>/ns/<ns>/sa/<sa>``."""
    return ca.issue(SpiffeId.workload(ns, sa, ca.trust_domain), ttl)


# -- certificates a server must refuse ----------------------------------------


def expired_cert(ca: CertificateAuthority, identity: SpiffeId) -> WorkloadCertificate:
    """Signed by ``ca`` for ``identity``, valid in every way but expired 30 s ago.

    Its validity lies within the CA's own where possible (up to 1 h long).
    """
    not_after = utc_now().replace(microsecond=0) - timedelta(seconds=30)
    not_before = max(ca.signing_certificate.not_valid_before_utc, not_after - timedelta(hours=1))
    if not_before >= not_after:
        not_before = not_after - timedelta(hours=1)
    san = [x509.UniformResourceIdentifier(identity.uri)]
    return _forge(ca, identity, san, not_before, not_after)


def cert_without_spiffe_san(
    ca: CertificateAuthority, identity: SpiffeId | None = None
) -> WorkloadCertificate:
    """Signed by ``ca`` and valid, but its only SAN is a DNS name.

    ``identity`` (default: default/default in the CA's trust domain) is recorded in
    the returned object only; the certificate does not carry it.
    """
    identity = identity or SpiffeId.workload("default", "default", ca.trust_domain)
    now = utc_now()
    san = [x509.DNSName("not-a-workload.example")]
    return _forge(ca, identity, san, now - timedelta(minutes=1), now + timedelta(hours=1))


def cert_from_unknown_ca(tmp_path: Path, identity: SpiffeId) -> WorkloadCertificate:
    """A well-formed certificate for ``identity`` from a different root (bundled with it)."""
    other = CertificateAuthority.load_or_create(
        tmp_path / "unknown-ca" / identity.trust_domain, trust_domain=identity.trust_domain
    )
    return other.issue(identity, timedelta(hours=1))


def cert_in_other_trust_domain(
    tmp_path: Path, namespace: str = "x", service_account: str = "y"
) -> WorkloadCertificate:
    """From a separate CA for ``evil.example``: ``spiffe://evil.example/ns/x/sa/y``."""
    evil = make_ca(tmp_path, EVIL_TRUST_DOMAIN)
    return issue(evil, namespace, service_account)


def cert_with_other_trust_domain_san(
    ca: CertificateAuthority, namespace: str = "x", service_account: str = "y"
) -> WorkloadCertificate:
    """Signed by ``ca`` itself but naming ``spiffe://evil.example/ns/x/sa/y``."""
    identity = SpiffeId.workload(namespace, service_account, EVIL_TRUST_DOMAIN)
    now = utc_now()
    san = [x509.UniformResourceIdentifier(identity.uri)]
    return _forge(ca, identity, san, now - timedelta(minutes=1), now + timedelta(hours=1))


# -- files and verification ------------------------------------------------------


def write_pem_files(
    directory: Path, cert: WorkloadCertificate, *, prefix: str = ""
) -> tuple[Path, Path, Path]:
    """Write ``<prefix>cert-chain.pem``, ``<prefix>key.pem`` (0600), ``<prefix>root-cert.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    chain_path = directory / f"{prefix}cert-chain.pem"
    key_path = directory / f"{prefix}key.pem"
    roots_path = directory / f"{prefix}root-cert.pem"
    chain_path.write_bytes(cert.chain_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cert.private_key_pem)
    roots_path.write_bytes(cert.roots_pem)
    return chain_path, key_path, roots_path


def verify_workload_chain(
    chain_pem: bytes, roots_pem: bytes, *, now: datetime | None = None
) -> list[str]:
    """Verify a client chain with cryptography's verifier; return the leaf's SPIFFE ids.

    Raises ``cryptography.x509.verification.VerificationError`` if untrusted.
    """
    chain = load_pem_chain(chain_pem)
    builder = PolicyBuilder().store(Store(load_pem_chain(roots_pem)))
    if now is not None:
        builder = builder.time(now)
    verified = builder.build_client_verifier().verify(chain[0], chain[1:])
    return spiffe_ids_in_certificate(verified.chain[0])


@dataclass(frozen=True)
class PluginCA:
    """What :func:`write_plugin_ca` wrote: a root and the intermediates below it."""

    directory: Path
    root: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]  # ca-cert.pem first, then towards the root


def write_plugin_ca(directory: Path, *, levels: int = 1, chain_has_root: bool = True) -> PluginCA:
    """Write Istio's plug-in CA files (root -> ``levels`` intermediates) into ``directory``.

    ``cert-chain.pem`` is ``ca-cert.pem`` then the intermediates up to the root,
    ending with the root itself unless ``chain_has_root`` is false.
    """
    now = utc_now()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_cert("plug-in root CA", root_key, None, root_key, now)
    issuer_cert, issuer_key = root, root_key
    above: list[x509.Certificate] = []
    for level in range(levels):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_cert(f"plug-in intermediate CA {level}", key, issuer_cert, issuer_key, now)
        above.insert(0, cert)
        issuer_cert, issuer_key = cert, key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_bytes(issuer_cert.public_bytes(_PEM))
    (directory / "ca-key.pem").write_bytes(
        issuer_key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (directory / "root-cert.pem").write_bytes(root.public_bytes(_PEM))
    chain = [*above, root] if chain_has_root else above
    (directory / "cert-chain.pem").write_bytes(b"".join(c.public_bytes(_PEM) for c in chain))
    return PluginCA(directory, root, tuple(above))


# -- internals ----------------------------------------------------------------------


def _forge(
    ca: CertificateAuthority,
    identity: SpiffeId,
    sans: Sequence[x509.GeneralName],
    not_before: datetime,
    not_after: datetime,
) -> WorkloadCertificate:
    """A leaf signed with the CA's key, bypassing its checks (tests only)."""
    signer = ca.signing_certificate
    signing_key = ca._signing_key
    key = ec.generate_private_key(ec.SECP256R1())
    uri_only = all(isinstance(n, x509.UniformResourceIdentifier) for n in sans)
    subject = (
        x509.Name([])
        if uri_only
        else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-a-workload")])
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=uri_only)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        .sign(signing_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return WorkloadCertificate(
        identity=identity,
        private_key_pem=key_pem,
        chain_pem=leaf.public_bytes(_PEM) + ca._chain_pem,
        roots_pem=ca.roots_pem(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def _ca_cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())
