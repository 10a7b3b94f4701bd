"""Trust bundles with several roots."""

from pathlib import Path

import pytest

from ambient.identity import CertificateError, TrustBundle, load_pem_chain
from tests.pki import issue, make_ca


def test_two_roots_dedup_and_pem_round_trip(tmp_path: Path) -> None:
    old, new = make_ca(tmp_path, "cluster.local"), make_ca(tmp_path / "new", "cluster.local")
    bundle = TrustBundle.from_pem(old.roots_pem() + new.roots_pem() + old.roots_pem())
    assert len(bundle) == 2
    assert bundle.roots == (old.signing_certificate, new.signing_certificate)
    assert TrustBundle.from_pem(bundle.pem()) == bundle
    assert new.signing_certificate in bundle
    assert list(bundle) == list(bundle.roots)


def test_with_root_is_immutable(tmp_path: Path) -> None:
    old, new = make_ca(tmp_path), make_ca(tmp_path / "new")
    one = old.trust_bundle
    two = one.with_root(new.signing_certificate)
    assert len(one) == 1 and len(two) == 2
    assert two.with_root(new.signing_certificate) == two
    assert one.merged(new.trust_bundle) == two
    assert hash(two) == hash(TrustBundle(reversed(two.roots)))
    with pytest.raises(AttributeError):
        one._roots = ()


def test_rejects_empty_and_non_ca(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="no root certificates"):
        TrustBundle([])
    with pytest.raises(CertificateError, match=r"roots.pem: no PEM certificates"):
        TrustBundle.from_pem(b"", "roots.pem")
    leaf = load_pem_chain(issue(make_ca(tmp_path)).chain_pem)[0]
    with pytest.raises(CertificateError, match="is not a CA certificate"):
        TrustBundle([leaf])
