"""What the waypoint does when no routing, JWT or L7 policy is configured.

``ForwardToTarget`` sends a request to the service and port the client
addressed (a Service "routes to itself", load balancing over its endpoints);
``AllowAll`` allows everything; ``NoAuthentication`` verifies no token. They
are real, minimal implementations of the protocols in ``waypoint.model``.
"""

from __future__ import annotations

from ambient.waypoint.model import (
    AuthnResult,
    AuthzVerdict,
    Backend,
    DirectResponse,
    Downstream,
    RequestHead,
    RequestPrincipal,
    RouteDecision,
    Target,
)

__all__ = ["AllowAll", "ForwardToTarget", "NoAuthentication"]

_ALLOWED = AuthzVerdict(True)  # frozen answers, shared by every request
_NO_TOKEN = AuthnResult()


class ForwardToTarget:
    """Route every request to the addressed service port, round robin over its endpoints.

    The decision depends on the target alone (namespace, hostname, port), so one frozen
    decision per target is kept (bounded) and shared by its requests."""

    MEMO_LIMIT = 4096

    def __init__(self) -> None:
        self._decisions: dict[tuple[str, str, int], RouteDecision] = {}

    def route(self, target: Target, request: RequestHead) -> RouteDecision:
        hostname = target.hostname
        if hostname is None:
            # The proxy forwards workload-addressed requests itself; a router is
            # only asked about services. Answer sensibly if called anyway.
            return RouteDecision(route="default", response=DirectResponse(404, body=b"no route\n"))
        key = (target.namespace, hostname, target.port)
        decision = self._decisions.get(key)
        if decision is None:
            if len(self._decisions) >= self.MEMO_LIMIT:
                self._decisions.clear()
            decision = self._decisions[key] = RouteDecision(
                route="default", backend=Backend(target.namespace, hostname, target.port)
            )
        return decision


class AllowAll:
    """No L7 authorization policy: every connection and request is allowed."""

    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        return _ALLOWED

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        return _ALLOWED


class NoAuthentication:
    """No RequestAuthentication: requests go on without a request principal."""

    async def authenticate(self, target: Target, request: RequestHead) -> AuthnResult:
        return _NO_TOKEN
