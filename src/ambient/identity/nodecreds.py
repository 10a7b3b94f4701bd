"""What a node holds: its key, its node certificate, and the roots it trusts for the control plane.

Made by ``ambient node join`` (``generate_node_key_and_csr``, then the control
plane's answer checked by ``NodeCredentials.from_pem``) and stored in the node's
state folder: the key 0600, the folder 0700 (see ``identity.node`` for the PKI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ambient.identity.certs import (
    load_pem_chain,
    load_private_key,
    public_key_matches,
    spiffe_ids_in_certificate,
    utc_now,
    verify_chain,
)
from ambient.identity.node import (
    NodeCredentialError,
    node_identity,
    node_name_of,
    validate_node_name,
)
from ambient.identity.spiffe import InvalidSpiffeId, SpiffeId
from ambient.identity.x509util import make_private_dir, read_file, read_private, write_atomic

__all__ = [
    "NODE_CERT_FILE",
    "NODE_KEY_FILE",
    "NODE_ROOTS_FILE",
    "NodeCredentials",
    "generate_node_key_and_csr",
]

NODE_KEY_FILE = "node-key.pem"
NODE_CERT_FILE = "node-cert.pem"
NODE_ROOTS_FILE = "control-plane-roots.pem"


def generate_node_key_and_csr() -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key (PKCS#8 PEM) and a CSR (PEM) with an empty subject and no SAN.

    The control plane decides the names: the node from the join token or the current
    node certificate, and the identity.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class NodeCredentials:
    """A node's key, its node certificate, and the roots it trusts for the control plane.

    The PEM fields are left out of ``repr`` so keys never end up in logs.
    """

    node: str
    private_key_pem: bytes = field(repr=False)
    chain_pem: bytes = field(repr=False)
    roots_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_pem(
        cls,
        node: str,
        private_key_pem: bytes,
        chain_pem: bytes,
        roots_pem: bytes,
        *,
        now: datetime | None = None,
    ) -> NodeCredentials:
        """Check and assemble what the control plane returned for ``node``'s CSR."""
        validate_node_name(node)
        what = f"node certificate of {node}"
        key = load_private_key(private_key_pem, f"private key of node {node}")
        chain = load_pem_chain(chain_pem, what)
        roots = load_pem_chain(roots_pem, f"control plane roots of node {node}")
        leaf = chain[0]
        if not public_key_matches(key, leaf):
            raise NodeCredentialError(f"{what} does not match its private key")
        named = node_name_of(leaf)
        if named != node:
            raise NodeCredentialError(f"{what} names node {named or 'none'}")
        ids = spiffe_ids_in_certificate(leaf)
        try:
            identity = SpiffeId.parse(ids[0]) if len(ids) == 1 else None
        except InvalidSpiffeId:
            identity = None
        if identity is None or identity != node_identity(identity.trust_domain):
            raise NodeCredentialError(f"{what} names {ids}, not the ztunnel identity")
        verify_chain(chain, roots, what=what)
        now = now or utc_now()
        if now >= leaf.not_valid_after_utc:
            raise NodeCredentialError(f"{what} expired at {leaf.not_valid_after_utc}")
        return cls(
            node,
            private_key_pem,
            chain_pem,
            roots_pem,
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
        )

    @property
    def identity(self) -> SpiffeId:
        """The SPIFFE id in the node certificate (the ztunnel identity)."""
        return SpiffeId.parse(
            spiffe_ids_in_certificate(load_pem_chain(self.chain_pem, "node certificate")[0])[0]
        )

    def refresh_at(self) -> datetime:
        """When to renew: at half-life."""
        return self.not_before + (self.not_after - self.not_before) / 2

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the node certificate is no longer valid at ``now``."""
        return (now or utc_now()) >= self.not_after

    def save(self, directory: Path) -> None:
        """Write key (0600), certificate and roots into ``directory`` (0700), each atomically."""
        directory = Path(directory)
        try:
            make_private_dir(directory)
            write_atomic(directory / NODE_KEY_FILE, self.private_key_pem, 0o600)
            write_atomic(directory / NODE_CERT_FILE, self.chain_pem, 0o644)
            write_atomic(directory / NODE_ROOTS_FILE, self.roots_pem, 0o644)
        except OSError as err:
            raise NodeCredentialError(
                f"cannot store the credentials of node {self.node} in {directory}: {err}"
            ) from None

    @classmethod
    def load(
        cls, directory: Path, node: str | None = None, *, now: datetime | None = None
    ) -> NodeCredentials:
        """Credentials saved by :meth:`save`; if ``node`` is given, they must be that node's."""
        directory = Path(directory)
        key_pem = read_private(directory / NODE_KEY_FILE)
        chain_pem = read_file(directory / NODE_CERT_FILE)
        named = node_name_of(load_pem_chain(chain_pem, str(directory / NODE_CERT_FILE))[0])
        if named is None:
            raise NodeCredentialError(f"{directory / NODE_CERT_FILE} names no node")
        if node is not None and named != node:
            raise NodeCredentialError(
                f"{directory} holds the credentials of node {named}, not {node}"
            )
        return cls.from_pem(
            named, key_pem, chain_pem, read_file(directory / NODE_ROOTS_FILE), now=now
        )
