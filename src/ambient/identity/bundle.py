"""Trust bundles: the set of root certificates a workload trusts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ambient.identity.certs import CertificateError, fingerprint, load_pem_chain

__all__ = ["TrustBundle"]


class TrustBundle:
    """An immutable, ordered, de-duplicated set of CA root certificates.

    Several roots are allowed so that a new root can be trusted alongside the
    old one while workloads are re-issued (root rotation). Every root must be a
    CA certificate (basicConstraints ca=True); a bundle is never empty.
    """

    __slots__ = ("_prints", "_roots")

    def __init__(self, roots: Iterable[x509.Certificate]) -> None:
        unique: dict[bytes, x509.Certificate] = {}
        for root in roots:
            if not isinstance(root, x509.Certificate):
                raise TypeError(f"trust bundle roots must be x509.Certificate, got {root!r}")
            _check_root(root)
            unique.setdefault(fingerprint(root), root)
        if not unique:
            raise CertificateError("trust bundle has no root certificates")
        object.__setattr__(self, "_roots", tuple(unique.values()))
        object.__setattr__(self, "_prints", frozenset(unique))

    _roots: tuple[x509.Certificate, ...]
    _prints: frozenset[bytes]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TrustBundle is immutable (cannot set {name!r})")

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "trust bundle") -> TrustBundle:
        """Parse one or more PEM root certificates; ``source`` names the input in errors."""
        return cls(load_pem_chain(pem, source))

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The roots, in the order first seen."""
        return self._roots

    def pem(self) -> bytes:
        """All roots as concatenated PEM."""
        return b"".join(r.public_bytes(serialization.Encoding.PEM) for r in self._roots)

    def with_root(self, cert: x509.Certificate) -> TrustBundle:
        """A bundle that also trusts ``cert`` (unchanged if already present)."""
        return TrustBundle((*self._roots, cert))

    def merged(self, other: TrustBundle) -> TrustBundle:
        """A bundle trusting the roots of both bundles."""
        return TrustBundle((*self._roots, *other.roots))

    def __contains__(self, cert: object) -> bool:
        return isinstance(cert, x509.Certificate) and fingerprint(cert) in self._prints

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(self._roots)

    def __len__(self) -> int:
        return len(self._roots)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustBundle):
            return NotImplemented
        return self._prints == other._prints

    def __hash__(self) -> int:
        return hash(self._prints)

    def __repr__(self) -> str:
        subjects = ", ".join(repr(r.subject.rfc4514_string()) for r in self._roots)
        return f"TrustBundle([{subjects}])"


def _check_root(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    except ValueError as err:
        raise CertificateError(f"trust bundle root has malformed extensions: {err}") from None
    if bc is None or not bc.ca:
        raise CertificateError(
            f"trust bundle root {cert.subject.rfc4514_string()!r} is not a CA certificate "
            "(basicConstraints ca=True is required)"
        )
