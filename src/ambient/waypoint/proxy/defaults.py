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


class ForwardToTarget:
    """Route every request to the addressed service port, round robin over its endpoints."""

    def route(self, target: Target, request: RequestHead) -> RouteDecision:
        if target.hostname is None:
            # The proxy forwards workload-addressed requests itself; a router is
            # only asked about services. Answer sensibly if called anyway.
            return RouteDecision(route="default", response=DirectResponse(404, body=b"no route\n"))
        return RouteDecision(
            route="default", backend=Backend(target.namespace, target.hostname, target.port)
        )


class AllowAll:
    """No L7 authorization policy: every connection and request is allowed."""

    def check_connection(self, target: Target, downstream: Downstream) -> AuthzVerdict:
        return AuthzVerdict(True)

    def check(
        self,
        target: Target,
        downstream: Downstream,
        request: RequestHead,
        principal: RequestPrincipal | None,
    ) -> AuthzVerdict:
        return AuthzVerdict(True)


class NoAuthentication:
    """No RequestAuthentication: requests go on without a request principal."""

    async def authenticate(self, target: Target, request: RequestHead) -> AuthnResult:
        return AuthnResult()
