"""The test PKI helpers produce exactly the certificates they promise."""

import stat
from pathlib import Path

import pytest
from cryptography.x509.verification import VerificationError

from ambient.identity import SpiffeId, WorkloadCertificate, load_pem_chain
from tests.pki import (
    cert_from_unknown_ca,
    cert_in_other_trust_domain,
    cert_with_other_trust_domain_san,
    cert_without_spiffe_san,
    expired_cert,
    issue,
    make_ca,
    verify_workload_chain,
    write_pem_files,
)

IDENT = SpiffeId.workload("shop", "cart")


def test_issue_is_trusted(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = issue(ca, "shop", "cart")
    assert cert.identity == IDENT
    assert verify_workload_chain(cert.chain_pem, ca.roots_pem()) == [IDENT.uri]


def test_make_ca_is_per_trust_domain(tmp_path: Path) -> None:
    assert make_ca(tmp_path).roots_pem() == make_ca(tmp_path).roots_pem()
    assert make_ca(tmp_path).roots_pem() != make_ca(tmp_path, "example.org").roots_pem()


def test_expired_cert(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = expired_cert(ca, IDENT)
    assert cert.is_expired()
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_workload_chain(cert.chain_pem, ca.roots_pem())
    # valid in every other respect
    at = cert.not_before + cert.lifetime() / 2
    assert verify_workload_chain(cert.chain_pem, ca.roots_pem(), now=at) == [IDENT.uri]


def test_cert_without_spiffe_san(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = cert_without_spiffe_san(ca)
    assert verify_workload_chain(cert.chain_pem, ca.roots_pem()) == []


def test_cert_from_unknown_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = cert_from_unknown_ca(tmp_path, IDENT)
    assert cert.roots_pem != ca.roots_pem()
    assert verify_workload_chain(cert.chain_pem, cert.roots_pem) == [IDENT.uri]
    with pytest.raises(VerificationError):
        verify_workload_chain(cert.chain_pem, ca.roots_pem())


def test_other_trust_domain_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = cert_in_other_trust_domain(tmp_path)
    evil = "spiffe://evil.example/ns/x/sa/y"
    assert verify_workload_chain(cert.chain_pem, cert.roots_pem) == [evil]
    with pytest.raises(VerificationError):
        verify_workload_chain(cert.chain_pem, ca.roots_pem())


def test_other_trust_domain_san_from_our_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert = cert_with_other_trust_domain_san(ca)
    assert cert.identity.trust_domain == "evil.example"
    # chains to our root: only a trust-domain check on the SAN refuses it
    assert verify_workload_chain(cert.chain_pem, ca.roots_pem()) == [
        "spiffe://evil.example/ns/x/sa/y"
    ]


def test_write_pem_files(tmp_path: Path) -> None:
    cert = issue(make_ca(tmp_path))
    chain, key, roots = write_pem_files(tmp_path / "out", cert, prefix="client-")
    assert chain.name == "client-cert-chain.pem" and key.name == "client-key.pem"
    assert chain.read_bytes() == cert.chain_pem
    assert key.read_bytes() == cert.private_key_pem
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_pem_chain(roots.read_bytes()) == load_pem_chain(cert.roots_pem)
    again = WorkloadCertificate.from_pem(
        cert.identity, key.read_bytes(), chain.read_bytes(), roots.read_bytes()
    )
    assert again.not_after == cert.not_after


def test_private_dirs_are_0700_all_the_way_down(tmp_path: Path) -> None:
    from ambient.identity.x509util import make_private_dir

    target = tmp_path / "nodes" / "node-1" / "credentials"
    make_private_dir(target)
    for folder in (tmp_path / "nodes", tmp_path / "nodes" / "node-1", target):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    make_private_dir(target)  # an existing folder is fine
