"""The mesh certificate authority: a self-signed root or Istio's plug-in CA files.

Plug-in CA (``plugin_dir``, as Istio's ``cacerts`` secret):

- ``ca-cert.pem``    the signing (intermediate) CA certificate
- ``ca-key.pem``     its private key
- ``root-cert.pem``  the root(s) workloads trust
- ``cert-chain.pem`` the chain from ``ca-cert.pem`` up to the root

Without them a self-signed root is created once in ``<state_dir>/ca/`` and
reused on restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ambient.identity.bundle import TrustBundle
from ambient.identity.certs import (
    CertificateError,
    SigningKey,
    WorkloadCertificate,
    fingerprint,
    generate_key_and_csr,
    load_pem_chain,
    load_private_key,
    public_key_matches,
    signature_hash,
    utc_now,
    verify_chain,
)
from ambient.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, validate_trust_domain
from ambient.identity.x509util import (
    CLOCK_SKEW,
    ceil_second,
    leaf_key_usage,
    make_private_dir,
    make_self_signed_root,
    read_file,
    write_atomic,
)

__all__ = ["PLUGIN_FILES", "CertificateAuthority"]

PLUGIN_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
ROOT_VALIDITY = timedelta(days=3650)
MIN_TTL = timedelta(seconds=1)
DEFAULT_TTL = timedelta(hours=24)
MIN_RSA_BITS = 2048


class CertificateAuthority:
    """Signs workload certificates for one trust domain.

    Workloads get ``leaf + intermediates`` as their chain and :attr:`trust_bundle`
    as their roots. For root rotation, :meth:`with_additional_roots` returns a CA
    with the same signer whose bundle also trusts other roots (e.g. the next root
    before switching to it, or the old root after switching).
    """

    def __init__(
        self,
        signing_cert: x509.Certificate,
        signing_key: SigningKey,
        bundle: TrustBundle,
        *,
        intermediates: Sequence[x509.Certificate] = (),
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Use ``signing_cert``/``signing_key``; ``intermediates`` lead from it to a root in
        ``bundle`` (roots themselves are dropped). Validated; raises CertificateError."""
        self._trust_domain = validate_trust_domain(trust_domain)
        _check_signer(signing_cert, signing_key, "signing certificate", "signing key")
        chain = _chain_without_roots([signing_cert, *intermediates], bundle)
        anchor = verify_chain(chain, bundle.roots, what="CA signing certificate")
        self._signing_cert = signing_cert
        self._signing_key = signing_key
        self._chain = tuple(chain)
        self._bundle = bundle
        self._clock = clock
        path = [*chain, anchor]
        self._valid_from = max(c.not_valid_before_utc for c in path)
        self._valid_until = min(c.not_valid_after_utc for c in path)
        # What follows the leaf: the signer and intermediates, never a root.
        issued = [c for c in chain if c not in bundle]
        self._chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued)

    # -- construction ---------------------------------------------------------

    @classmethod
    def generate(
        cls,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> CertificateAuthority:
        """A CA with a fresh in-memory self-signed ECDSA P-256 root (10 years)."""
        validate_trust_domain(trust_domain)
        cert, key = make_self_signed_root(
            trust_domain, clock(), ROOT_VALIDITY, common_name="ambient root CA", path_length=None
        )
        return cls(cert, key, TrustBundle([cert]), trust_domain=trust_domain, clock=clock)

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        *,
        plugin_dir: Path | None = None,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Callable[[], datetime] = utc_now,
    ) -> CertificateAuthority:
        """Plug-in CA from ``plugin_dir`` if its files exist, else the root in ``state_dir/ca``.

        Some but not all plug-in files present is an error, never a silent fallback.
        """
        validate_trust_domain(trust_domain)
        if plugin_dir is not None:
            present = [name for name in PLUGIN_FILES if (plugin_dir / name).is_file()]
            if present:
                missing = [name for name in PLUGIN_FILES if name not in present]
                if missing:
                    raise CertificateError(
                        f"plug-in CA directory {plugin_dir} is incomplete: missing "
                        f"{', '.join(missing)} (found {', '.join(present)})"
                    )
                return cls._load_plugin(plugin_dir, trust_domain, clock)
        return cls._load_or_create_root(Path(state_dir) / "ca", trust_domain, clock)

    @classmethod
    def _load_plugin(
        cls, directory: Path, trust_domain: str, clock: Callable[[], datetime]
    ) -> CertificateAuthority:
        paths = {name: directory / name for name in PLUGIN_FILES}
        certs = load_pem_chain(read_file(paths["ca-cert.pem"]), str(paths["ca-cert.pem"]))
        if len(certs) != 1:
            raise CertificateError(
                f"{paths['ca-cert.pem']}: expected exactly one certificate, found {len(certs)}"
            )
        ca_cert = certs[0]
        key = load_private_key(read_file(paths["ca-key.pem"]), str(paths["ca-key.pem"]))
        bundle = TrustBundle.from_pem(
            read_file(paths["root-cert.pem"]), str(paths["root-cert.pem"])
        )
        chain = load_pem_chain(read_file(paths["cert-chain.pem"]), str(paths["cert-chain.pem"]))
        _check_signer(ca_cert, key, str(paths["ca-cert.pem"]), str(paths["ca-key.pem"]))
        _check_validity(ca_cert, str(paths["ca-cert.pem"]), clock())
        # Istio's cert-chain.pem starts with ca-cert.pem; also accept it without.
        if fingerprint(chain[0]) == fingerprint(ca_cert):
            chain = chain[1:]
        try:
            verify_chain(_chain_without_roots([ca_cert, *chain], bundle), bundle.roots)
        except CertificateError as err:
            raise CertificateError(
                f"{paths['cert-chain.pem']} does not lead from {paths['ca-cert.pem']} to a root "
                f"in {paths['root-cert.pem']}: {err}"
            ) from None
        return cls(
            ca_cert, key, bundle, intermediates=chain, trust_domain=trust_domain, clock=clock
        )

    @classmethod
    def _load_or_create_root(
        cls, directory: Path, trust_domain: str, clock: Callable[[], datetime]
    ) -> CertificateAuthority:
        cert_path, key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
        if not cert_path.exists():
            cert, key = make_self_signed_root(
                trust_domain,
                clock(),
                ROOT_VALIDITY,
                common_name="ambient root CA",
                path_length=None,
            )
            _write_root(directory, cert, key)
            return cls(cert, key, TrustBundle([cert]), trust_domain=trust_domain, clock=clock)
        if not key_path.exists():
            raise CertificateError(f"{cert_path} exists but its key {key_path} is missing")
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise CertificateError(
                f"{key_path} is accessible by group or others (mode {mode:o}); chmod 600 it"
            )
        certs = load_pem_chain(read_file(cert_path), str(cert_path))
        if len(certs) != 1:
            raise CertificateError(f"{cert_path}: expected one certificate, found {len(certs)}")
        cert = certs[0]
        key = load_private_key(read_file(key_path), str(key_path))
        _check_signer(cert, key, str(cert_path), str(key_path))
        _check_validity(cert, str(cert_path), clock())
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if orgs != [trust_domain]:
            raise CertificateError(
                f"{cert_path} is the root of trust domain {', '.join(map(str, orgs)) or '?'}, "
                f"not {trust_domain!r}; remove {directory} to create a new root"
            )
        return cls(cert, key, TrustBundle([cert]), trust_domain=trust_domain, clock=clock)

    def with_additional_roots(
        self, roots: TrustBundle | Iterable[x509.Certificate]
    ) -> CertificateAuthority:
        """The same signer, with a trust bundle that also holds ``roots`` (root rotation)."""
        extra = roots if isinstance(roots, TrustBundle) else TrustBundle(roots)
        return CertificateAuthority(
            self._signing_cert,
            self._signing_key,
            self._bundle.merged(extra),
            intermediates=self._chain[1:],
            trust_domain=self._trust_domain,
            clock=self._clock,
        )

    # -- accessors ------------------------------------------------------------

    @property
    def trust_domain(self) -> str:
        """The trust domain this CA issues identities in."""
        return self._trust_domain

    @property
    def trust_bundle(self) -> TrustBundle:
        """The roots workloads of this CA trust."""
        return self._bundle

    @property
    def signing_certificate(self) -> x509.Certificate:
        """The certificate leaves are signed with (the root, or the plug-in ca-cert.pem)."""
        return self._signing_cert

    def roots_pem(self) -> bytes:
        """The trust bundle as PEM."""
        return self._bundle.pem()

    # -- signing --------------------------------------------------------------

    def sign_csr(self, csr_pem: bytes, identity: SpiffeId, ttl: timedelta = DEFAULT_TTL) -> bytes:
        """Sign a CSR for ``identity``; return the chain PEM, leaf first, then intermediates.

        The caller has already decided that the requester may have ``identity``;
        that is the only SAN written. A CSR that asks for any other SAN is
        rejected, as are bad CSR signatures and weak keys.
        """
        if not isinstance(identity, SpiffeId):
            raise TypeError(f"identity must be a SpiffeId, got {type(identity).__name__}")
        if identity.trust_domain != self._trust_domain:
            raise CertificateError(
                f"cannot sign for {identity}: not in this CA's trust domain {self._trust_domain!r}"
            )
        if not isinstance(ttl, timedelta) or ttl < MIN_TTL:
            raise ValueError(f"certificate ttl must be at least 1 second, got {ttl!r}")
        csr = _load_csr(csr_pem, identity)
        now = self._clock()
        if now < self._valid_from:
            raise CertificateError(f"CA certificate chain is not valid until {self._valid_from}")
        if now >= self._valid_until:
            raise CertificateError(f"CA certificate chain expired at {self._valid_until}")
        not_before = max(now - CLOCK_SKEW, self._valid_from)
        # X.509 times have whole seconds: round up so the leaf lives at least ``ttl``.
        not_after = min(ceil_second(now + ttl), self._valid_until)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._signing_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(leaf_key_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            # Empty subject, so the SAN must be critical (RFC 5280 4.2.1.6), as Istio does.
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                critical=True,
            )
            .add_extension(_authority_key_id(self._signing_cert, self._signing_key), critical=False)
            .sign(self._signing_key, signature_hash(self._signing_key))
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self._chain_pem

    def issue(self, identity: SpiffeId, ttl: timedelta = DEFAULT_TTL) -> WorkloadCertificate:
        """Generate a key and CSR for ``identity`` and sign it."""
        key_pem, csr_pem = generate_key_and_csr(identity)
        chain_pem = self.sign_csr(csr_pem, identity, ttl)
        return WorkloadCertificate.from_pem(
            identity, key_pem, chain_pem, self.roots_pem(), now=self._clock()
        )


# -- helpers ------------------------------------------------------------------


def _check_signer(cert: x509.Certificate, key: SigningKey, cert_name: str, key_name: str) -> None:
    _check_key_strength(key, key_name)
    if not public_key_matches(key, cert):
        raise CertificateError(f"{key_name} does not match the public key of {cert_name}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ca = bc.ca
    except x509.ExtensionNotFound:
        ca = False
    except ValueError as err:
        raise CertificateError(f"{cert_name} has malformed extensions: {err}") from None
    if not ca:
        raise CertificateError(
            f"{cert_name} is not a CA certificate (needs basicConstraints ca=True)"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise CertificateError(
            f"{cert_name} may not sign certificates (keyUsage lacks keyCertSign)"
        )


def _check_key_strength(key: object, name: str) -> None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(f"{name}: RSA key of {key.key_size} bits is too weak")
    elif isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise CertificateError(f"{name}: unsupported elliptic curve {key.curve.name}")
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        raise CertificateError(f"{name}: unsupported key type {type(key).__name__}")


def _check_validity(cert: x509.Certificate, name: str, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"{name} is not valid until {cert.not_valid_before_utc}")
    if now >= cert.not_valid_after_utc:
        raise CertificateError(f"{name} expired at {cert.not_valid_after_utc}")


def _chain_without_roots(
    chain: Sequence[x509.Certificate], bundle: TrustBundle
) -> list[x509.Certificate]:
    """``chain`` minus trailing certificates that are roots in ``bundle`` (keeps chain[0])."""
    kept = list(chain)
    while len(kept) > 1 and kept[-1] in bundle:
        kept.pop()
    return kept


def _load_csr(csr_pem: bytes, identity: SpiffeId) -> x509.CertificateSigningRequest:
    if not isinstance(csr_pem, bytes):
        raise CertificateError(f"CSR for {identity}: expected PEM bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as err:
        raise CertificateError(f"CSR for {identity} is not a valid PEM CSR ({err})") from None
    try:
        valid = csr.is_signature_valid
        public_key = csr.public_key()
        extensions = csr.extensions
    except ValueError as err:
        raise CertificateError(f"CSR for {identity} is malformed ({err})") from None
    if not valid:
        raise CertificateError(f"CSR for {identity} has an invalid signature")
    _check_key_strength(public_key, f"CSR for {identity}")
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return csr
    wanted = [x509.UniformResourceIdentifier(identity.uri)]
    if list(san) != wanted:
        asked = ", ".join(str(getattr(name, "value", name)) for name in san)
        raise CertificateError(f"CSR for {identity} asks for other names: {asked}")
    return csr


def _authority_key_id(issuer: x509.Certificate, key: SigningKey) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _write_root(directory: Path, cert: x509.Certificate, key: SigningKey) -> None:
    """Write key (0600) then cert into ``directory`` (0700), each atomically."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    try:
        make_private_dir(directory)
        os.chmod(directory, 0o700)
        write_atomic(directory / ROOT_KEY_FILE, key_pem, 0o600)
        write_atomic(directory / ROOT_CERT_FILE, cert_pem, 0o644)
    except OSError as err:
        raise CertificateError(f"cannot store the CA root in {directory}: {err}") from None
