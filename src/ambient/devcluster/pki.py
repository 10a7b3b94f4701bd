"""The throwaway PKI of a dev cluster (kubeadm's layout, reduced to what one host needs).

One ECDSA CA signs everything: the API server's serving certificate (SANs: the
loopback addresses, ``localhost``, the first Service IP and the
``kubernetes.default.svc`` names, as kubeadm issues it) and client certificates
for the admin (``O=system:masters``), ``system:kube-controller-manager`` and
``system:kube-scheduler`` (the users the bootstrap RBAC policy grants their
roles to). Service-account tokens are signed with an RSA key, as kubeadm does.
Private keys are written mode 0600; the whole folder goes with ``down``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ambient.identity.certs import SigningKey, utc_now
from ambient.identity.x509util import CLOCK_SKEW, leaf_key_usage, make_self_signed_root

__all__ = ["ClientCert", "ClusterPKI", "make_pki"]

VALIDITY = timedelta(days=30)
_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    ca_cert: Path
    ca_key: Path
    serving: ClientCert
    admin: ClientCert
    controller_manager: ClientCert
    scheduler: ClientCert
    sa_key: Path
    sa_pub: Path


def _write_key(path: Path, key: SigningKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(pem)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    *,
    common_name: str,
    organization: str | None = None,
    server_sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, SigningKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    now = utc_now()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server_sans else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    )
    if server_sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(server_sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _save(
    folder: Path, name: str, pair: tuple[x509.Certificate, SigningKey | rsa.RSAPrivateKey]
) -> ClientCert:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(pair[0].public_bytes(_PEM))
    _write_key(key_path, pair[1])
    return ClientCert(cert_path, key_path)


def make_pki(
    folder: Path,
    first_service_ip: str,
    dns_domain: str = "cluster.local",
    extra_ips: tuple[str, ...] = (),
) -> ClusterPKI:
    """Create the CA, serving and client certificates and the SA key pair in ``folder``
    (``extra_ips``: more addresses the API server is reached at, in its certificate)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert, ca_key = make_self_signed_root(
        "ambient dev cluster", utc_now(), VALIDITY, common_name="kubernetes-ca"
    )
    ca = _save(folder, "ca", (ca_cert, ca_key))
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names.append(f"kubernetes.default.svc.{dns_domain}")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    for ip in dict.fromkeys(("127.0.0.1", "::1", first_service_ip, *extra_ips)):
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    serving = _save(
        folder, "apiserver", _issue(ca_cert, ca_key, common_name="kube-apiserver", server_sans=sans)
    )
    admin = _save(
        folder,
        "admin",
        _issue(ca_cert, ca_key, common_name="kubernetes-admin", organization="system:masters"),
    )
    kcm = _save(
        folder,
        "controller-manager",
        _issue(ca_cert, ca_key, common_name="system:kube-controller-manager"),
    )
    sched = _save(folder, "scheduler", _issue(ca_cert, ca_key, common_name="system:kube-scheduler"))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(folder / "sa.key", sa_key)
    pub = sa_key.public_key().public_bytes(_PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (folder / "sa.pub").write_bytes(pub)
    return ClusterPKI(
        ca_cert=ca.cert,
        ca_key=ca.key,
        serving=serving,
        admin=admin,
        controller_manager=kcm,
        scheduler=sched,
        sa_key=folder / "sa.key",
        sa_pub=folder / "sa.pub",
    )
