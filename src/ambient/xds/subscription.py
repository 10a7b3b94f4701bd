"""``XdsSubscription``: the ``Delta``s of what an ``XdsClient`` applied, as the control plane's
subscriptions give them (``SubscriptionLike``), for a process that relays or watches them.

Apart from ``xds.client`` because it builds ``MeshSnapshot``s: a node proxy following the
control plane does not import the control plane's modules.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ambient.controlplane.snapshot import EMPTY, Delta, MeshSnapshot, diff

if TYPE_CHECKING:
    from ambient.xds.client import XdsClient

__all__ = ["XdsSubscription"]


class XdsSubscription:
    """``SubscriptionLike`` over an ``XdsClient``: coalesced ``Delta``s of its state."""

    def __init__(self, client: XdsClient, node: str | None) -> None:
        self._client = client
        self._node = node
        self._sent = EMPTY
        self._first = True
        self._closed = False
        self._wake = asyncio.Event()

    @property
    def node(self) -> str | None:
        return self._node

    def __aiter__(self) -> XdsSubscription:
        return self

    async def __anext__(self) -> Delta:
        while not self._closed:
            self._wake.clear()
            if self._client.synced.is_set():
                state = self._client.state
                current = MeshSnapshot(
                    workloads=state.workloads,
                    services=state.services,
                    authorizations={p.key: p for p in state.policies.authorizations()},
                )
                delta = diff(self._sent, current)
                self._sent = current
                if self._first or delta:
                    self._first = False
                    return delta
            await self._wake.wait()
        raise StopAsyncIteration

    def notify(self) -> None:
        """Wake the reader: the client applied a push."""
        self._wake.set()

    def close(self) -> None:
        """End the iteration."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._client._unsubscribe(self)
