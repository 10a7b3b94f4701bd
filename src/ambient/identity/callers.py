"""Who is calling the control plane: an authenticated ``Caller`` (a node), or a refusal.

Two authenticators produce callers (``ambient.xds.callers``): a node certificate (the
folder and node-join modes) and a Kubernetes service-account token of a trusted node
account (the cluster mode, ``ambient.kube.nodeauth``). Both say which node calls;
what the node may then obtain is the authorizer's business.

Refusals are exceptions the gRPC services map to status codes:
``Unauthenticated`` (UNAUTHENTICATED: no credential, or one that cannot be trusted),
``NotAuthorized`` from ``controlplane.source`` (PERMISSION_DENIED: a genuine caller
that may not do this), ``AuthUnavailable`` (UNAVAILABLE: the credential could not be
checked now, e.g. the API server is unreachable; retrying later may succeed).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AuthUnavailable", "Caller", "Unauthenticated"]


class Unauthenticated(PermissionError):
    """The caller presented no credential, or one that cannot be trusted."""


class AuthUnavailable(ConnectionError):
    """The caller's credential could not be checked now (fails closed; retry later)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated node: its name, and how it proved it (for logs and refusals)."""

    node: str
    via: str = ""  # e.g. "pod istio-system/ztunnel-abc, istio-system/ztunnel"

    def __str__(self) -> str:
        return f"node {self.node}" + (f" ({self.via})" if self.via else "")
