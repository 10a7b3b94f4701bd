"""X.509 and file building blocks shared by the mesh CA (``ca``) and the node CA (``node``)."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ambient.durable import replace_durably
from ambient.identity.certs import CertificateError, SigningKey

CLOCK_SKEW = timedelta(minutes=1)


def read_file(path: Path) -> bytes:
    """The bytes of ``path``; a clear :class:`CertificateError` if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise CertificateError(f"cannot read {path}: {err.strerror or err}") from None


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` and each missing parent with mode 0700 (``Path.mkdir`` would make
    the parents 0755); an existing folder is left as it is."""
    missing = []
    folder = Path(directory)
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` via a temporary file, fsync'd, then renamed
    (and the folder fsync'd: the rename itself is durable once this returns)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            os.fsync(fd)
    finally:
        os.close(fd)
    replace_durably(tmp, path)


def read_private(path: Path) -> bytes:
    """The bytes of a key file, refused if group or others may access it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as err:
        raise CertificateError(f"cannot read {path}: {err.strerror or err}") from None
    if mode & 0o077:
        raise CertificateError(
            f"{path} is accessible by group or others (mode {mode:o}); chmod 600 it"
        )
    return read_file(path)


def ceil_second(when: datetime) -> datetime:
    """``when`` rounded up to a whole second (X.509 times have no fractions)."""
    whole = when.replace(microsecond=0)
    return whole if whole == when else whole + timedelta(seconds=1)


def leaf_key_usage() -> x509.KeyUsage:
    """Key usage of a workload or node leaf certificate (TLS client and server)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def make_self_signed_root(
    trust_domain: str,
    now: datetime,
    validity: timedelta,
    *,
    common_name: str,
    path_length: int | None = None,
) -> tuple[x509.Certificate, SigningKey]:
    """A new ECDSA P-256 self-signed CA certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
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
        .sign(key, hashes.SHA256())
    )
    return cert, key
