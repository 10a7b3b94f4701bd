"""Workload certificates: keys, CSRs, PEM chains and the checks shared by CA and clients."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ambient.identity.spiffe import SpiffeId

__all__ = [
    "CertificateError",
    "WorkloadCertificate",
    "fingerprint",
    "generate_key_and_csr",
    "load_pem_chain",
    "load_private_key",
    "public_key_matches",
    "spiffe_ids_in_certificate",
    "utc_now",
    "verify_chain",
]

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class CertificateError(Exception):
    """A certificate, key, CSR or chain that is malformed or must not be trusted."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 fingerprint of a certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256())


@dataclass(frozen=True)
class WorkloadCertificate:
    """A workload's key, its certificate chain and the roots it trusts.

    ``chain_pem`` holds the leaf first, then intermediates (never a root);
    ``roots_pem`` is the trust bundle, possibly with several roots. The PEM
    fields are left out of ``repr`` so keys never end up in logs.
    """

    identity: SpiffeId
    private_key_pem: bytes = field(repr=False)
    chain_pem: bytes = field(repr=False)
    roots_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        for name in ("not_before", "not_after"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"WorkloadCertificate.{name} must be timezone-aware: {value!r}")
        if self.not_after <= self.not_before:
            raise ValueError(
                f"WorkloadCertificate for {self.identity}: not_after {self.not_after} "
                f"is not after not_before {self.not_before}"
            )

    @classmethod
    def from_pem(
        cls,
        identity: SpiffeId,
        private_key_pem: bytes,
        chain_pem: bytes,
        roots_pem: bytes,
        *,
        now: datetime | None = None,
    ) -> WorkloadCertificate:
        """Check and assemble what a CA returned for ``identity``'s CSR.

        Fails closed unless the leaf holds ``private_key_pem``'s public key, names
        exactly ``identity``, is not a CA, has not expired and chains to one of the
        roots. Roots the CA appended to the chain (Istio does) are dropped from it.
        """
        key = load_private_key(private_key_pem, "workload private key")
        chain = load_pem_chain(chain_pem, "certificate chain")
        roots = load_pem_chain(roots_pem, "trust bundle")
        leaf = chain[0]
        if not public_key_matches(key, leaf):
            raise CertificateError(
                f"certificate for {identity} does not match the private key it was requested for"
            )
        ids = spiffe_ids_in_certificate(leaf)
        if ids != [identity.uri]:
            raise CertificateError(f"certificate for {identity} names SPIFFE ids {ids}")
        if _is_ca(leaf):
            raise CertificateError(f"certificate for {identity} is a CA certificate")
        root_prints = {fingerprint(root) for root in roots}
        while len(chain) > 1 and fingerprint(chain[-1]) in root_prints:
            chain.pop()
        verify_chain(chain, roots, what=f"certificate for {identity}")
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        now = now or utc_now()
        if now >= not_after:
            raise CertificateError(f"certificate for {identity} expired at {not_after}")
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return cls(identity, private_key_pem, pem, roots_pem, not_before, not_after)

    def lifetime(self) -> timedelta:
        """Total validity period."""
        return self.not_after - self.not_before

    def refresh_at(self) -> datetime:
        """When to renew: at half-life, as Istio's ztunnel does."""
        return self.not_before + self.lifetime() / 2

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the certificate is no longer valid at ``now`` (default: the current time)."""
        return (now or utc_now()) >= self.not_after


def generate_key_and_csr(identity: SpiffeId) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key (PKCS#8 PEM) and a CSR (PEM) for ``identity``.

    Like Istio's, the CSR has an empty subject and a critical URI SAN.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def spiffe_ids_in_certificate(cert: x509.Certificate) -> list[str]:
    """The certificate's URI SANs that start with ``spiffe://``, in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as err:
        raise CertificateError(f"certificate has malformed extensions: {err}") from None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return [uri for uri in uris if uri.startswith("spiffe://")]


def load_pem_chain(pem: bytes, source: str = "PEM data") -> list[x509.Certificate]:
    """All certificates in ``pem``, in order; ``source`` names it in errors."""
    if not isinstance(pem, bytes):
        raise CertificateError(f"{source}: expected PEM bytes, got {type(pem).__name__}")
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CertificateError(f"{source}: no PEM certificates found")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateError(f"{source}: malformed PEM certificate data") from None
    return certs


def load_private_key(pem: bytes, source: str = "private key") -> SigningKey:
    """An unencrypted EC, RSA or Ed25519 private key from PEM; ``source`` names it in errors."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CertificateError(
            f"{source}: not a valid unencrypted PEM private key ({err})"
        ) from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CertificateError(f"{source}: unsupported key type {type(key).__name__}")
    return key


def public_key_matches(key: SigningKey, cert: x509.Certificate) -> bool:
    """Whether ``cert`` certifies ``key``'s public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        cert_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return bool(key.public_key().public_bytes(der, spki) == cert_key.public_bytes(der, spki))


def verify_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    what: str = "certificate",
) -> x509.Certificate:
    """Check signatures from ``chain[0]`` up through ``chain[-1]`` to one of ``roots``.

    Each ``chain[i]`` must be issued by ``chain[i + 1]``, each issuer must be a CA,
    and the last one must be issued by (or be) a root. Returns that root.
    """
    if not chain:
        raise CertificateError(f"{what}: empty certificate chain")
    for child, parent in itertools.pairwise(chain):
        if not _is_ca(parent):
            raise CertificateError(f"{what}: chain certificate {_name(parent)} is not a CA")
        if not _issued_by(child, parent):
            raise CertificateError(
                f"{what}: {_name(child)} is not signed by the next certificate in the chain, "
                f"{_name(parent)}"
            )
    top = chain[-1]
    prints = {fingerprint(root): root for root in roots}
    if fingerprint(top) in prints:
        return top
    for root in roots:
        if _is_ca(root) and _issued_by(top, root):
            return root
    raise CertificateError(
        f"{what}: chain ends at {_name(top)}, issued by {top.issuer.rfc4514_string() or '<empty>'},"
        " which is not signed by any trusted root"
    )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except ValueError as err:
        raise CertificateError(f"{_name(cert)} has malformed extensions: {err}") from None
    return bc.ca


def _name(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    if subject:
        return repr(subject)
    ids = spiffe_ids_in_certificate(cert)
    return repr(ids[0]) if ids else f"certificate serial {cert.serial_number:x}"


def signature_hash(key: SigningKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None:
    """The hash to sign with for ``key`` (None for Ed25519)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()
