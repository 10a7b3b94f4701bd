"""Open connections and what they were admitted on, judged again on every push (ztunnel's
ConnectionManager).

A connection that L4 authorization allowed is tracked with the
:class:`InboundConnection` it was allowed on and a way to close it;
:meth:`ConnectionTracker.close_denied` (after every push) asks the authorizer
again, with the destination workload as the state has it now, and closes the
ones it now denies, each with one ``RBAC rejected ... closing established
connection`` log line. One tracker per ztunnel holds the three kinds: HBONE
tunnels into a local pod (``inbound``), plaintext captured at an enrolled pod
(``plaintext``, in-pod mode), and plaintext a local pod sends to an enrolled one
(``outbound``: in local mode nothing captures it at the destination, so it is
judged at the source).

Decision: a connection whose destination is no longer in the state is not
judged: that pod is being removed, its listeners drain, and its open
connections end on their own (as they did when each handler kept its own list).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ambient.state.proxy import ProxyState
from ambient.ztunnel.authorization import Authorizer, InboundConnection

__all__ = ["ConnectionTracker"]

log = logging.getLogger("ambient.ztunnel")


@dataclass(slots=True)
class _Tracked:
    admitted: InboundConnection
    close: Callable[[], None]
    source: str  # the caller as the log names it (address, or address:port)


class _Tracking:
    """The ``with`` block of :meth:`ConnectionTracker.tracking` (a class: one per connection,
    cheaper than a generator-based context manager)."""

    __slots__ = ("_key", "_open", "_tracked")

    def __init__(self, open_: dict[Hashable, _Tracked], key: Hashable, tracked: _Tracked) -> None:
        self._open = open_
        self._key = key
        self._tracked = tracked

    def __enter__(self) -> None:
        self._open[self._key] = self._tracked

    def __exit__(self, *_: object) -> None:
        self._open.pop(self._key, None)


class ConnectionTracker:
    """The open connections of one ztunnel that policy may close (see the module docstring)."""

    def __init__(self, state: ProxyState, authorizer: Callable[[], Authorizer]) -> None:
        self.state = state
        self.authorizer = authorizer
        self._open: dict[Hashable, _Tracked] = {}

    def __len__(self) -> int:
        return len(self._open)

    def tracking(
        self, key: Hashable, admitted: InboundConnection, close: Callable[[], None], source: str
    ) -> _Tracking:
        """Track ``key`` (a stream, a pipe) for the duration of the ``with`` block."""
        return _Tracking(self._open, key, _Tracked(admitted, close, source))

    def close_denied(self) -> int:
        """Judge every tracked connection again; close (and forget) the denied ones."""
        closed = 0
        authorize = self.authorizer()
        for key, tracked in list(self._open.items()):
            admitted = tracked.admitted
            destination = self.state.workloads.get(admitted.destination.uid)
            if destination is None:
                continue
            verdict = authorize(dataclasses.replace(admitted, destination=destination))
            if verdict.allowed:
                continue
            log.info(
                "RBAC rejected conn=%s(%s)->%s:%d: closing established connection: %s",
                tracked.source,
                admitted.source_identity or "no identity",
                admitted.destination_ip,
                admitted.destination_port,
                verdict.reason or "denied by policy",
            )
            del self._open[key]
            tracked.close()
            closed += 1
        return closed
