"""The node PKI: how a node's ztunnel proves to the control plane which node it runs on.

Istio's ztunnel authenticates to istiod as ``spiffe://<td>/ns/istio-system/sa/ztunnel`` and
asks for its pods' certificates with ``ImpersonatedIdentity``; istiod checks that the pod
runs on the caller's node. Here the node is named in the caller's certificate.

Decisions:

- A separate *node PKI* (:class:`NodeAuthority`, its own self-signed root in
  ``<state_dir>/node-ca/``) issues node certificates and the control plane's server
  certificate. The mesh CA is untouched, and no workload certificate (a node legitimately
  holds those of its pods) can pass as a node or as the control plane: it has the wrong root.
- A node certificate has an empty subject and exactly one URI SAN, Istio's ztunnel identity
  ``spiffe://<td>/ns/istio-system/sa/ztunnel`` (valid for ``SpiffeId.parse``; X.509-SVIDs
  allow one URI SAN). The node name is in the non-critical extension :data:`NODE_NAME_OID`
  (a DER UTF8String; a UUID OID, X.667, so no registration). Extended key usage: clientAuth
  only. It lives 30 days and is renewed by presenting it (``ambient.xds.ca_service``).
- The control plane's server certificate has DNS SAN ``istiod.istio-system.svc`` (gRPC
  clients check DNS names, not URI SANs) and URI SAN ``spiffe://<td>/ns/istio-system/sa/istiod``;
  serverAuth only. Node certificates have no DNS SAN, so none can pass as the control plane.
- Nodes join with one-time tokens (``identity.jointokens``); what a node stores is
  ``identity.nodecreds``; which nodes are still members, ``identity.members``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ambient.identity.certs import (
    CertificateError,
    SigningKey,
    WorkloadCertificate,
    load_pem_chain,
    load_private_key,
    public_key_matches,
    signature_hash,
    utc_now,
    verify_chain,
)
from ambient.identity.spiffe import (
    DEFAULT_TRUST_DOMAIN,
    SpiffeId,
    validate_trust_domain,
)
from ambient.identity.x509util import (
    CLOCK_SKEW,
    ceil_second,
    leaf_key_usage,
    make_private_dir,
    make_self_signed_root,
    read_file,
    read_private,
    write_atomic,
)

__all__ = [
    "CONTROL_PLANE_HOSTNAME",
    "DEFAULT_NODE_TTL",
    "NODE_NAME_OID",
    "NodeAuthority",
    "NodeCredentialError",
    "control_plane_identity",
    "node_identity",
    "node_name_of",
    "validate_node_name",
]

NODE_NAME_OID = x509.ObjectIdentifier("2.25.248868754131444726044753208495491865084")
SYSTEM_NAMESPACE = "istio-system"
ZTUNNEL_SERVICE_ACCOUNT = "ztunnel"
CONTROL_PLANE_SERVICE_ACCOUNT = "istiod"
CONTROL_PLANE_HOSTNAME = "istiod.istio-system.svc"
DEFAULT_NODE_TTL = timedelta(days=30)
DEFAULT_SERVER_TTL = timedelta(days=30)
ROOT_VALIDITY = timedelta(days=3650)
MIN_RSA_BITS = 2048

NODE_CA_DIR = "node-ca"
ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"

_NODE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_MAX_NODE_NAME = 253
_UTF8_STRING = 0x0C


class NodeCredentialError(CertificateError):
    """A node certificate that is missing, malformed or not issued by this node PKI."""


# -- names ----------------------------------------------------------------------------------


def validate_node_name(node: object) -> str:
    """Return ``node`` if it is a valid node name (a DNS subdomain, as Kubernetes'), else raise."""
    if not isinstance(node, str):
        raise ValueError(f"node name must be a string, got {type(node).__name__}")
    if not node or len(node) > _MAX_NODE_NAME or not _NODE_NAME.fullmatch(node):
        raise ValueError(
            f"invalid node name {node[:80]!r}: expected a DNS subdomain (lowercase letters, "
            f"digits, '-' and '.', at most {_MAX_NODE_NAME} characters)"
        )
    return node


def node_identity(trust_domain: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
    """The SPIFFE id every node certificate carries (Istio's ztunnel identity)."""
    return SpiffeId(trust_domain, SYSTEM_NAMESPACE, ZTUNNEL_SERVICE_ACCOUNT)


def control_plane_identity(trust_domain: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
    """The SPIFFE id of the control plane's server certificate (Istio's istiod identity)."""
    return SpiffeId(trust_domain, SYSTEM_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)


def _encode_node_name(node: str) -> bytes:
    data = validate_node_name(node).encode("ascii")
    length = bytes([len(data)]) if len(data) < 0x80 else bytes([0x81, len(data)])
    return bytes([_UTF8_STRING]) + length + data


def _decode_node_name(der: bytes) -> str:
    if len(der) < 2 or der[0] != _UTF8_STRING:
        raise NodeCredentialError("node name extension is not a DER UTF8String")
    length, offset = der[1], 2
    if length == 0x81:
        if len(der) < 3 or der[2] < 0x80:
            raise NodeCredentialError("node name extension has a malformed length")
        length, offset = der[2], 3
    elif length >= 0x80:
        raise NodeCredentialError("node name extension has a malformed length")
    if len(der) != offset + length:
        raise NodeCredentialError("node name extension has trailing or missing bytes")
    try:
        return validate_node_name(der[offset:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise NodeCredentialError(f"node name extension: {err}") from None


def node_name_of(cert: x509.Certificate) -> str | None:
    """The node named in ``cert``'s node-name extension; None if it has none."""
    try:
        ext = cert.extensions.get_extension_for_oid(NODE_NAME_OID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as err:
        raise NodeCredentialError(f"certificate has malformed extensions: {err}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - defensive
        raise NodeCredentialError("node name extension has an unexpected type")
    return _decode_node_name(value.value)


# -- the node PKI ---------------------------------------------------------------------------


class NodeAuthority:
    """Issues node certificates and the control plane's server certificate; checks node certs."""

    def __init__(
        self,
        root_cert: x509.Certificate,
        root_key: SigningKey,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Sign with ``root_key`` as ``root_cert`` (a self-signed CA); raises CertificateError."""
        self._trust_domain = validate_trust_domain(trust_domain)
        if not public_key_matches(root_key, root_cert):
            raise CertificateError("node CA key does not match the node CA certificate")
        if not _is_ca(root_cert):
            raise CertificateError("node CA certificate is not a CA (basicConstraints ca=True)")
        self._root = root_cert
        self._key = root_key
        self._clock = clock

    @classmethod
    def generate(
        cls, trust_domain: str = DEFAULT_TRUST_DOMAIN, *, clock: Callable[[], datetime] = utc_now
    ) -> NodeAuthority:
        """A node PKI with a fresh in-memory root (ECDSA P-256, 10 years)."""
        cert, key = make_self_signed_root(
            validate_trust_domain(trust_domain),
            clock(),
            ROOT_VALIDITY,
            common_name="ambient node CA",
            path_length=0,
        )
        return cls(cert, key, trust_domain=trust_domain, clock=clock)

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Callable[[], datetime] = utc_now,
    ) -> NodeAuthority:
        """The root in ``<state_dir>/node-ca/``, created there on first use."""
        directory = Path(state_dir) / NODE_CA_DIR
        cert_path, key_path = directory / ROOT_CERT_FILE, directory / ROOT_KEY_FILE
        if not cert_path.exists():
            cert, key = make_self_signed_root(
                validate_trust_domain(trust_domain),
                clock(),
                ROOT_VALIDITY,
                common_name="ambient node CA",
                path_length=0,
            )
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                make_private_dir(directory)
                write_atomic(key_path, key_pem, 0o600)
                write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            except OSError as err:
                raise CertificateError(f"cannot store the node CA in {directory}: {err}") from None
            return cls(cert, key, trust_domain=trust_domain, clock=clock)
        if not key_path.exists():
            raise CertificateError(f"{cert_path} exists but its key {key_path} is missing")
        key = load_private_key(read_private(key_path), str(key_path))
        certs = load_pem_chain(read_file(cert_path), str(cert_path))
        if len(certs) != 1:
            raise CertificateError(f"{cert_path}: expected one certificate, found {len(certs)}")
        cert = certs[0]
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if orgs != [trust_domain]:
            raise CertificateError(
                f"{cert_path} is the node CA of trust domain {', '.join(map(str, orgs)) or '?'}, "
                f"not {trust_domain!r}; remove {directory} to create a new one (nodes must rejoin)"
            )
        now = clock()
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CertificateError(
                f"{cert_path} is valid only from {cert.not_valid_before_utc} "
                f"to {cert.not_valid_after_utc}"
            )
        return cls(cert, key, trust_domain=trust_domain, clock=clock)

    @property
    def trust_domain(self) -> str:
        """The trust domain of node and control-plane identities."""
        return self._trust_domain

    @property
    def root_certificate(self) -> x509.Certificate:
        """The node PKI root: nodes trust it for the control plane, and it for nodes."""
        return self._root

    def now(self) -> datetime:
        """The current time by this authority's clock."""
        return self._clock()

    def roots_pem(self) -> bytes:
        """The node PKI root as PEM."""
        return self._root.public_bytes(serialization.Encoding.PEM)

    def sign_node_csr(self, node: str, csr_pem: bytes, ttl: timedelta = DEFAULT_NODE_TTL) -> bytes:
        """Sign a node certificate for ``node``; the CSR may name no SAN or the ztunnel identity."""
        validate_node_name(node)
        identity = node_identity(self._trust_domain)
        csr = _load_csr(csr_pem, f"node {node}", allowed_uri=identity.uri)
        return self._sign(
            csr.public_key(),
            [x509.UniformResourceIdentifier(identity.uri)],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ttl,
            x509.UnrecognizedExtension(NODE_NAME_OID, _encode_node_name(node)),
        )

    def issue_server_certificate(self, ttl: timedelta = DEFAULT_SERVER_TTL) -> WorkloadCertificate:
        """A fresh key and certificate for the control plane's gRPC server."""
        identity = control_plane_identity(self._trust_domain)
        key = ec.generate_private_key(ec.SECP256R1())
        chain = self._sign(
            key.public_key(),
            [
                x509.DNSName(CONTROL_PLANE_HOSTNAME),
                x509.UniformResourceIdentifier(identity.uri),
            ],
            ExtendedKeyUsageOID.SERVER_AUTH,
            ttl,
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return WorkloadCertificate.from_pem(
            identity, key_pem, chain, self.roots_pem(), now=self._clock()
        )

    def verify_node_certificate(self, cert_pem: bytes) -> str:
        """The node named by a client certificate (PEM, leaf first); NodeCredentialError if invalid.

        Checked again here although TLS checked it: issued by this root, in validity, not a
        CA, clientAuth, exactly the ztunnel identity as SAN, and a valid node name.
        """
        try:
            leaf = load_pem_chain(cert_pem, "client certificate")[0]
        except CertificateError as err:
            raise NodeCredentialError(str(err)) from None
        shown = _describe(leaf)
        prefix = f"client certificate {shown} is not a node certificate of this control plane"
        try:
            verify_chain([leaf], [self._root], what="client certificate")
            is_ca = _is_ca(leaf)
            eku = _extended_key_usage(leaf)
        except CertificateError as err:
            raise NodeCredentialError(f"{prefix}: {err}") from None
        now = self._clock()
        if now < leaf.not_valid_before_utc:
            raise NodeCredentialError(f"{prefix}: not valid until {leaf.not_valid_before_utc}")
        if now >= leaf.not_valid_after_utc:
            raise NodeCredentialError(f"{prefix}: expired at {leaf.not_valid_after_utc}")
        if is_ca:
            raise NodeCredentialError(f"{prefix}: it is a CA certificate")
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise NodeCredentialError(f"{prefix}: its extended key usage lacks clientAuth")
        expected = node_identity(self._trust_domain).uri
        names = _all_sans(leaf)
        if names != [expected]:
            raise NodeCredentialError(
                f"{prefix}: its names are {names or 'none'}, expected exactly {expected}"
            )
        node = node_name_of(leaf)
        if node is None:
            raise NodeCredentialError(f"{prefix}: it names no node")
        return node

    def _sign(
        self,
        public_key: CertificatePublicKeyTypes,
        names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        ttl: timedelta,
        extra: x509.ExtensionType | None = None,
    ) -> bytes:
        if not isinstance(ttl, timedelta) or ttl < timedelta(seconds=1):
            raise ValueError(f"certificate ttl must be at least 1 second, got {ttl!r}")
        now = self._clock()
        if now < self._root.not_valid_before_utc:
            raise CertificateError(f"node CA is not valid until {self._root.not_valid_before_utc}")
        if now >= self._root.not_valid_after_utc:
            raise CertificateError(f"node CA expired at {self._root.not_valid_after_utc}")
        not_before = max(now - CLOCK_SKEW, self._root.not_valid_before_utc)
        not_after = min(ceil_second(now + ttl), self._root.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(leaf_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if extra is not None:
            builder = builder.add_extension(extra, critical=False)
        cert = builder.sign(self._key, signature_hash(self._key))
        return cert.public_bytes(serialization.Encoding.PEM)


# -- helpers --------------------------------------------------------------------------------


def _describe(cert: x509.Certificate) -> str:
    try:
        names = _all_sans(cert)
    except CertificateError:
        names = []
    return f"({', '.join(names)})" if names else f"(serial {cert.serial_number:x})"


def _all_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except ValueError as err:
        raise NodeCredentialError(f"certificate has malformed extensions: {err}") from None
    return [str(getattr(name, "value", name)) for name in san]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError as err:
        raise CertificateError(f"certificate has malformed extensions: {err}") from None


def _extended_key_usage(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
    except ValueError as err:
        raise CertificateError(f"certificate has malformed extensions: {err}") from None


def _load_csr(csr_pem: bytes, who: str, *, allowed_uri: str) -> x509.CertificateSigningRequest:
    if not isinstance(csr_pem, bytes):
        raise CertificateError(f"CSR of {who}: expected PEM bytes")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid = csr.is_signature_valid
        public_key = csr.public_key()
        extensions = csr.extensions
    except ValueError as err:
        raise CertificateError(f"CSR of {who} is not a valid PEM CSR ({err})") from None
    if not valid:
        raise CertificateError(f"CSR of {who} has an invalid signature")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                f"CSR of {who}: RSA key of {public_key.key_size} bits is too weak"
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise CertificateError(f"CSR of {who}: unsupported curve {public_key.curve.name}")
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise CertificateError(f"CSR of {who}: unsupported key type {type(public_key).__name__}")
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return csr
    asked = [str(getattr(name, "value", name)) for name in san]
    if asked != [allowed_uri]:
        raise CertificateError(
            f"CSR of {who} asks for names {asked}; only {allowed_uri} is allowed"
        )
    return csr
