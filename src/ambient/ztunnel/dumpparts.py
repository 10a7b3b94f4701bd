"""Parts of ztunnel's ``/config_dump`` in Istio's ztunnel shape: certificates with their
chain and roots, and ``workloadState`` (the live connections per local workload), as
``istioctl ztunnel-config certificates|connections`` read them.

- ``certificates``: ``certChain`` (the leaf, then intermediates) and ``rootCerts``, each
  ``{pem, serialNumber (decimal), validFrom, expirationTime}`` (RFC 3339, seconds). The
  older keys (``not_before``, ``not_after``, ``chain_pem``) stay for our own readers.
- ``workloadState``: by workload uid, ``{info: {name, namespace, serviceAccount},
  connections: {inbound: [...], outbound: [...]}}``, each connection ``{src,
  originalDst, actualDst, protocol}`` (``HBONE`` or ``TCP``): inbound ones from their
  destination's view (``src`` the caller, ``actualDst`` the application's address),
  outbound ones from their source's (``actualDst`` where ztunnel connected: a peer's
  15008 for HBONE, ``originalDst`` what the client asked for).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ambient.identity.certs import WorkloadCertificate
from ambient.state.workload import Workload
from ambient.ztunnel.metrics import ConnectionRecord, Direction

__all__ = ["certificate_json", "workload_state"]


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _certs(pem: bytes) -> list[dict[str, str]]:
    out = []
    for cert in x509.load_pem_x509_certificates(pem) if pem.strip() else []:
        out.append(
            {
                "pem": cert.public_bytes(Encoding.PEM).decode(),
                "serialNumber": str(cert.serial_number),
                "validFrom": _stamp(cert.not_valid_before_utc),
                "expirationTime": _stamp(cert.not_valid_after_utc),
            }
        )
    return out


def certificate_json(cert: WorkloadCertificate) -> dict[str, Any]:
    """One identity's certificates (see the module docstring)."""
    return {
        "identity": str(cert.identity),
        "state": "Expired" if cert.is_expired() else "Available",
        "certChain": _certs(cert.chain_pem),
        "rootCerts": _certs(cert.roots_pem),
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "chain_pem": cert.chain_pem.decode(),
    }


def _connection(record: ConnectionRecord) -> dict[str, str]:
    if record.direction is Direction.INBOUND:
        return {
            "src": record.src_addr,
            "originalDst": record.hbone_addr or record.dst_addr,
            "actualDst": record.hbone_addr or record.dst_addr,
            "protocol": "HBONE" if record.mtls else "TCP",
        }
    return {
        "src": record.src_addr,
        "originalDst": record.original_dst or record.hbone_addr or record.dst_addr,
        "actualDst": record.dst_addr,
        "protocol": "HBONE" if record.mtls else "TCP",
    }


def workload_state(
    records: list[ConnectionRecord], local: dict[str, Workload]
) -> dict[str, dict[str, Any]]:
    """``workloadState`` for the live ``records`` of this node's workloads ``local`` (by uid)."""
    out: dict[str, dict[str, Any]] = {}
    for uid, w in sorted(local.items()):
        out[uid] = {
            "info": {"name": w.name, "namespace": w.namespace, "serviceAccount": w.service_account},
            "connections": {"inbound": [], "outbound": []},
        }
    for record in records:
        inbound = record.direction is Direction.INBOUND
        owner = record.destination if inbound else record.source
        if owner is None or owner.uid not in out:
            continue
        out[owner.uid]["connections"]["inbound" if inbound else "outbound"].append(
            _connection(record)
        )
    return out
