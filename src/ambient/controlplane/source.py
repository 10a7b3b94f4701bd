"""What a proxy needs from the control plane: the interface both the in-process
``ControlPlane`` and a future xDS client implement.

ztunnel (and waypoints) see only this: a stream of ``Delta``s, the first of
which is the full state, and certificate signing for identities of their node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ambient.controlplane.snapshot import Delta
from ambient.identity.spiffe import SpiffeId

__all__ = ["MeshSource", "NotAuthorized", "SubscriptionLike"]


class NotAuthorized(PermissionError):
    """The control plane refuses a request (e.g. a certificate for a workload not on the node)."""


class SubscriptionLike(Protocol):
    """An async iterator of ``Delta``s; ends once closed."""

    @property
    def node(self) -> str | None: ...

    def __aiter__(self) -> AsyncIterator[Delta]: ...

    async def __anext__(self) -> Delta: ...

    def close(self) -> None: ...


class MeshSource(Protocol):
    """The control plane as its consumers see it."""

    def subscribe(self, node: str | None = None) -> SubscriptionLike:
        """A new subscription; its first ``Delta`` upserts everything."""
        ...

    async def sign_certificate(
        self, node: str, identity: SpiffeId, csr_pem: bytes
    ) -> tuple[bytes, bytes]:
        """``(chain_pem, roots_pem)`` for ``identity``, if a workload of ``node`` has it."""
        ...
