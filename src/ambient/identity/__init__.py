"""Workload identity: SPIFFE ids, the certificate authority, workload certificates."""

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
