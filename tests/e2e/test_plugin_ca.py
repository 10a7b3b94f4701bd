"""`ambient up DIR` signs with Istio's plug-in CA files from DIR/cacerts/ (the local contract)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from ambient.identity.certs import load_pem_chain, spiffe_ids_in_certificate
from tests.e2e.harness import REPO, Mesh
from tests.pki import write_plugin_ca

pytestmark = pytest.mark.slow


def test_workload_certificates_chain_to_the_plugin_root(tmp_path: Path) -> None:
    config = tmp_path / "shop"
    shutil.copytree(REPO / "examples" / "shop", config)
    plugin = write_plugin_ca(config / "cacerts", levels=1)
    mesh = Mesh(config, tmp_path / "state", tmp_path / "up.log", single_process=True).start()
    try:
        answer = mesh.curl("http://orders:8080/plugin")
        assert answer["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"
        certs = mesh.json("zc", "certificates")
        assert certs, "no workload certificates reported"
        for entry in certs:
            chain = load_pem_chain(entry["chain_pem"].encode())
            leaf, *rest = chain
            assert spiffe_ids_in_certificate(leaf) == [entry["identity"]]
            # leaf <- plug-in intermediate (ca-cert.pem) <- plug-in root (root-cert.pem)
            assert leaf.issuer == plugin.intermediates[0].subject
            leaf.verify_directly_issued_by(plugin.intermediates[0])
            assert plugin.intermediates[0] in rest
            plugin.intermediates[0].verify_directly_issued_by(plugin.root)
        # nothing of our own root was made: the state folder holds no CA of its own
        assert not (tmp_path / "state" / "ca" / "root-key.pem").exists()
    finally:
        mesh.stop()
    assert isinstance(plugin.root, x509.Certificate)
