"""Throw-away mesh PKI for the interop peers (self-contained; not tests/pki.py).

Layout written by :func:`generate` into a directory:

* ``roots.pem``: the mesh root plus one unrelated root (exercises multi-root bundles)
* ``server.pem``/``server.key``: ``spiffe://cluster.local/ns/a/sa/server``
* ``client.pem``/``client.key``: ``spiffe://cluster.local/ns/a/sa/client``
* ``foreign.pem``/``foreign.key``: same SPIFFE id as the client, issued by an unknown CA
* ``other-td.pem``/``other-td.key``: mesh CA, foreign trust domain ``other.domain``
* ``nospiffe.pem``/``nospiffe.key``: mesh CA, DNS SAN only

Each ``*.pem`` is a chain: leaf, then the mesh intermediate (root not included).
Keys are ECDSA P-256 in PKCS#8. Leaves have an empty subject, a critical SAN,
and EKU serverAuth+clientAuth, like Istio workload certificates.

Usage: python make_test_certs.py OUTDIR
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/a/sa/server"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/a/sa/client"
OTHER_TD_ID = "spiffe://other.domain/ns/a/sa/client"


@dataclass(frozen=True)
class Identity:
    chain: Path
    key: Path


@dataclass(frozen=True)
class InteropPKI:
    dir: Path
    roots: Path
    server: Identity
    client: Identity
    foreign: Identity
    other_td: Identity
    nospiffe: Identity


@dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca(cn: str, parent: _CA | None = None) -> _CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, cn)])
    issuer_name = parent.cert.subject if parent else name
    signer = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
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
    if parent:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
            critical=False,
        )
    return _CA(key, builder.sign(signer, hashes.SHA256()))


def _leaf(
    issuer: _CA, sans: list[x509.GeneralName]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_identity(
    outdir: Path,
    name: str,
    issuer: _CA,
    sans: list[x509.GeneralName],
    chain_extra: list[x509.Certificate],
) -> Identity:
    key, cert = _leaf(issuer, sans)
    chain = outdir / f"{name}.pem"
    keyfile = outdir / f"{name}.key"
    chain.write_bytes(_pem(cert) + b"".join(_pem(c) for c in chain_extra))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return Identity(chain, keyfile)


def generate(outdir: Path) -> InteropPKI:
    outdir.mkdir(parents=True, exist_ok=True)
    root = _ca("mesh root")
    inter = _ca("mesh intermediate", root)
    unrelated = _ca("unrelated root")
    foreign_root = _ca("foreign root")
    roots = outdir / "roots.pem"
    roots.write_bytes(_pem(unrelated.cert) + _pem(root.cert))

    def uri(u: str) -> list[x509.GeneralName]:
        return [x509.UniformResourceIdentifier(u)]

    return InteropPKI(
        dir=outdir,
        roots=roots,
        server=_write_identity(outdir, "server", inter, uri(SERVER_ID), [inter.cert]),
        client=_write_identity(outdir, "client", inter, uri(CLIENT_ID), [inter.cert]),
        foreign=_write_identity(outdir, "foreign", foreign_root, uri(CLIENT_ID), []),
        other_td=_write_identity(outdir, "other-td", inter, uri(OTHER_TD_ID), [inter.cert]),
        nospiffe=_write_identity(
            outdir,
            "nospiffe",
            inter,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            [inter.cert],
        ),
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    pki = generate(Path(argv[1]))
    for p in sorted(pki.dir.iterdir()):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
