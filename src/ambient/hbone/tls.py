"""Mutual TLS for HBONE: contexts built from workload certificates, SPIFFE checks on peers.

The standard ``ssl`` module verifies the certificate chain against the mesh
roots (expiry, signature, CA flags); hostname checks are off and replaced by
SPIFFE checks done right after the handshake:

- the server accepts a client only if its certificate's first URI SAN is a
  SPIFFE id in the server's own trust domain;
- the client accepts a server only if its SPIFFE id is one it expected
  (the destination workload's identity, or its waypoint's).

TLS 1.3 only, ALPN ``h2`` only, no SNI. Any failure is fail-closed: the
connection is dropped and :class:`PeerRejected` says why.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import weakref
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from cryptography import x509

from ambient.identity.certs import WorkloadCertificate, spiffe_ids_in_certificate
from ambient.identity.spiffe import InvalidSpiffeId, SpiffeId

ALPN_H2 = "h2"


class PeerRejected(Exception):
    """The TLS peer is not one we accept; the message says which check failed."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is on the other end of an HBONE connection, as verified."""

    identity: SpiffeId
    address: tuple[str, int]


def _base_context(purpose: int, cert: WorkloadCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols([ALPN_H2])
    ctx.options |= ssl.OP_NO_TICKET  # no session resumption: every connection proves its cert
    ctx.load_verify_locations(cadata=cert.roots_pem.decode("ascii"))
    with _pem_files(cert.chain_pem, cert.private_key_pem) as (chain_path, key_path):
        ctx.load_cert_chain(chain_path, key_path)
    return ctx


def server_context(cert: WorkloadCertificate) -> ssl.SSLContext:
    """A TLS server context presenting ``cert`` and requiring a client certificate."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, cert)
    ctx.num_tickets = 0  # TLS 1.3 tickets are never honoured; do not send them at all
    return ctx


def client_context(cert: WorkloadCertificate) -> ssl.SSLContext:
    """A TLS client context presenting ``cert``; the server's SAN is checked afterwards."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, cert)


@contextlib.contextmanager
def _pem_files(chain_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """The chain and key as paths ``ssl`` can load, kept off disk where possible.

    ``ssl.SSLContext.load_cert_chain`` only reads files. On Linux an anonymous
    memory file (memfd) is used; elsewhere a private temporary directory,
    removed at once.
    """
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("hbone-chain"), os.memfd_create("hbone-key")]
        try:
            for fd, data in zip(fds, (chain_pem, key_pem), strict=True):
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="ambient-tls-") as tmp:  # pragma: no cover
        chain_path, key_path = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((chain_path, chain_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield chain_path, key_path


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId:
    """The SPIFFE id of a verified TLS peer, after checking ALPN; raises :class:`PeerRejected`."""
    alpn = ssl_object.selected_alpn_protocol()
    if alpn != ALPN_H2:
        raise PeerRejected(
            f"peer did not negotiate ALPN h2 (got {alpn or 'none'}): not an HBONE client"
        )
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerRejected("peer presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    ids = spiffe_ids_in_certificate(cert)
    if not ids:
        raise PeerRejected(
            f"peer certificate (subject {cert.subject.rfc4514_string() or 'empty'}) "
            "has no SPIFFE URI SAN"
        )
    try:
        return SpiffeId.parse(ids[0])
    except InvalidSpiffeId as exc:
        raise PeerRejected(f"peer certificate SAN is not a workload identity: {exc}") from None


def check_client(identity: SpiffeId, trust_domain: str) -> None:
    """Server side: the client must belong to our trust domain."""
    if identity.trust_domain != trust_domain:
        raise PeerRejected(
            f"client identity {identity} is from trust domain {identity.trust_domain!r}, "
            f"not {trust_domain!r}"
        )


def check_server(identity: SpiffeId, expected: Collection[SpiffeId]) -> None:
    """Client side: the server must be one of the identities we expected."""
    if identity not in expected:
        wanted = ", ".join(sorted(str(e) for e in expected)) or "(none)"
        raise PeerRejected(f"server identity {identity} is not the expected {wanted}")


class ContextCache:
    """SSL contexts per workload certificate (building one costs milliseconds; one
    holds ~23.5 KB).

    Keyed by the certificate object itself; a renewed certificate is a new
    object and so gets a new context. An entry holds its certificate weakly and
    goes when the certificate is dropped, so a cache shared by every listener of a
    process (``SERVER_CONTEXTS``: pods of one identity share one context) keeps
    nothing for pods that are gone. Bounded too: the oldest entry goes first.
    """

    def __init__(self, *, server_side: bool, max_entries: int = 256) -> None:
        self._server_side = server_side
        self._max = max_entries
        self._contexts: dict[int, tuple[weakref.ref[WorkloadCertificate], ssl.SSLContext]] = {}

    def get(self, cert: WorkloadCertificate) -> ssl.SSLContext:
        """The context presenting ``cert``, built on first use."""
        key = id(cert)
        entry = self._contexts.get(key)
        if entry is not None and entry[0]() is cert:
            return entry[1]
        ctx = server_context(cert) if self._server_side else client_context(cert)
        if len(self._contexts) >= self._max:
            self._contexts.pop(next(iter(self._contexts)), None)
        ref = weakref.ref(cert, lambda dead: self._forget(key, dead))
        self._contexts[key] = (ref, ctx)
        return ctx

    def _forget(self, key: int, dead: weakref.ref[WorkloadCertificate]) -> None:
        entry = self._contexts.get(key)
        if entry is not None and entry[0] is dead:  # not a newer certificate's entry
            del self._contexts[key]

    def __len__(self) -> int:
        return len(self._contexts)


SERVER_CONTEXTS = ContextCache(server_side=True, max_entries=4096)
"""Server contexts shared by every ``HboneServer`` of the process. Entries go with their
certificates, so the bound is only a backstop: it is far above the certificates a node's
pods hold at once (each listener had a context of its own before), as an evicted context
costs milliseconds to build again on the next connection."""
