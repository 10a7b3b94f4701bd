"""The dev cluster's PKI: who each certificate says it is, and where it is valid."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ambient.devcluster.pki import make_pki


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_and_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", "10.96.0.1")
    ca = _cert(pki.ca_cert)
    serving = _cert(pki.serving.cert)
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.96.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]

    def subject(path: Path) -> tuple[str, list[str]]:
        name = _cert(path).subject
        cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        orgs = [str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        return str(cn), orgs

    assert subject(pki.admin.cert) == ("kubernetes-admin", ["system:masters"])
    assert subject(pki.controller_manager.cert) == ("system:kube-controller-manager", [])
    assert subject(pki.scheduler.cert) == ("system:kube-scheduler", [])
    for client in (pki.admin, pki.controller_manager, pki.scheduler):
        _cert(client.cert).verify_directly_issued_by(ca)
        assert stat.S_IMODE(client.key.stat().st_mode) == 0o600
    assert isinstance(load_pem_private_key(pki.sa_key.read_bytes(), None), rsa.RSAPrivateKey)
    assert stat.S_IMODE(pki.sa_key.stat().st_mode) == 0o600
