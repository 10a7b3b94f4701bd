"""DestinationRule ``connectionPool`` as Envoy's circuit breakers for one cluster.

A cluster is what Envoy calls it: one service port, narrowed to a subset
(``Backend.cluster``). Limits and what happens at them:

- ``http.http2MaxRequests`` (Envoy ``max_requests``, for every protocol):
  requests outstanding to the cluster, waiting ones included; one more is
  refused at once.
- ``tcp.maxConnections``: the waypoint speaks HTTP/1.1 upstream, one request
  per connection at a time, so this bounds requests *in progress*; a request
  over it waits for a connection as a pending request.
- ``http.http1MaxPendingRequests``: requests allowed to wait that way; one
  more is refused.
- ``http.maxRetries``: retries in progress across the cluster; a retry over
  it is not made (the last answer goes back to the client).
- ``http.maxRequestsPerConnection``: an upstream connection is closed after
  that many requests (0: unlimited); ``http.idleTimeout``: idle upstream
  connections of the cluster close after it (Istio's default 1 h);
  ``tcp.connectTimeout``: opening the tunnel to an endpoint (default 10 s).

A refused request is answered 503 ``upstream connect error or disconnect/reset
before headers. reset reason: overflow`` with flag ``UO``, as Envoy does.
Idle keep-alive connections do not count against ``maxConnections`` (they are
reused first, so the number of requests in progress is what the limit
bounds in practice). Unset limits are Istio's defaults: 2^32-1.
"""

from __future__ import annotations

import asyncio
import collections

from ambient.config.destinationrule import PoolPolicy

__all__ = ["ClusterLimits", "Overflow"]


class Overflow(Exception):
    """A circuit breaker refused the request (flag ``UO``)."""


class ClusterLimits:
    """Counts one cluster's requests, pending requests and retries against a ``PoolPolicy``."""

    def __init__(self, policy: PoolPolicy) -> None:
        self.policy = policy
        self.requests = 0  # outstanding: pending + in progress
        self.in_progress = 0
        self.retries = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def try_acquire(self) -> bool:
        """Take a request slot if one is free now (False: :meth:`acquire` must wait for one);
        raises :class:`Overflow`. Spares the usual request a coroutine."""
        policy = self.policy
        if self.requests >= policy.max_requests:
            raise Overflow("max requests")
        if self.in_progress < policy.max_connections and not self._waiting:
            self.requests += 1
            self.in_progress += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a request slot (waiting for a connection if needed); raises :class:`Overflow`."""
        if self.try_acquire():
            return
        if len(self._waiting) >= self.policy.max_pending:
            raise Overflow("max pending requests")
        self.requests += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter  # release() hands its slot over: in_progress already counts us
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                self._waiting.remove(waiter)
                self.requests -= 1
            raise

    def release(self) -> None:
        """The request's exchange is over: hand the slot to the first waiter, if any."""
        self.requests -= 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # in_progress unchanged: the slot moves over
                return
        self.in_progress -= 1

    def try_retry(self) -> bool:
        """Take a retry slot (``maxRetries``); False: the retry budget is exhausted."""
        if self.retries >= self.policy.max_retries:
            return False
        self.retries += 1
        return True

    def retry_done(self) -> None:
        self.retries -= 1
