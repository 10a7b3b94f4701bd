"""Workload identity: SPIFFE ids, the certificate authority, workload certificates."""

from typing import TYPE_CHECKING

from ambient.lazyexports import lazy_exports

if TYPE_CHECKING:
    from ambient.identity.bundle import TrustBundle
    from ambient.identity.ca import CertificateAuthority
    from ambient.identity.certs import (
        CertificateError,
        WorkloadCertificate,
        generate_key_and_csr,
        load_pem_chain,
        spiffe_ids_in_certificate,
    )
    from ambient.identity.manager import CertificateManager, Issuer
    from ambient.identity.spiffe import DEFAULT_TRUST_DOMAIN, InvalidSpiffeId, SpiffeId

# Imported on first use (PEP 562), as ``ambient.config``: a node proxy needs a few of
# the package's modules, not all of them (``tests/unit/local/test_nodeproxy_imports.py``).
_LAZY = {
    "CertificateAuthority": "ambient.identity.ca",
    "CertificateError": "ambient.identity.certs",
    "CertificateManager": "ambient.identity.manager",
    "DEFAULT_TRUST_DOMAIN": "ambient.identity.spiffe",
    "InvalidSpiffeId": "ambient.identity.spiffe",
    "Issuer": "ambient.identity.manager",
    "SpiffeId": "ambient.identity.spiffe",
    "TrustBundle": "ambient.identity.bundle",
    "WorkloadCertificate": "ambient.identity.certs",
    "generate_key_and_csr": "ambient.identity.certs",
    "load_pem_chain": "ambient.identity.certs",
    "spiffe_ids_in_certificate": "ambient.identity.certs",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "CertificateAuthority",
    "CertificateError",
    "CertificateManager",
    "InvalidSpiffeId",
    "Issuer",
    "SpiffeId",
    "TrustBundle",
    "WorkloadCertificate",
    "generate_key_and_csr",
    "load_pem_chain",
    "spiffe_ids_in_certificate",
]
