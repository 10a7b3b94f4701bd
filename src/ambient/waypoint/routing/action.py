"""What a matched rule does: pick a weighted backend, redirect, or answer directly.

Decisions that do not depend on the request (no rewrite, no redirect) are
built once at compile time, so ``decide`` is a weighted pick and a tuple index.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

from ambient.waypoint.model import (
    Backend,
    DirectResponse,
    HeaderOps,
    Mirror,
    RequestHead,
    RouteDecision,
    Target,
)
from ambient.waypoint.resilience.fault import FaultPolicy
from ambient.waypoint.resilience.retry import DEFAULT_RETRY, RetryPolicy
from ambient.waypoint.routing.filters import (
    GatewayRedirect,
    GatewayRewrite,
    IstioRedirect,
    IstioRewrite,
    merge_header_ops,
)

_NO_OPS = HeaderOps()

__all__ = ["Rng", "RouteAction", "WeightedBackend", "error_decision"]


class Rng(Protocol):
    """The random source for weighted picks (``random.Random`` fits; tests pass a script)."""

    def randrange(self, stop: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    """A backend with its weight; ``backend`` None: unresolved, answered with ``error_status``."""

    backend: Backend | None
    weight: int
    error_status: int = 500
    error_reason: str = ""
    request_headers: HeaderOps = _NO_OPS
    response_headers: HeaderOps = _NO_OPS


def error_decision(route: str, status: int, reason: str) -> RouteDecision:
    body = f"{reason}\n".encode()
    return RouteDecision(
        route,
        response=DirectResponse(status, (("content-type", "text/plain"),), body),
    )


@dataclass(slots=True)
class RouteAction:
    route: str
    backends: tuple[WeightedBackend, ...] = ()
    request_headers: HeaderOps = _NO_OPS
    response_headers: HeaderOps = _NO_OPS
    mirrors: tuple[Mirror, ...] = ()
    timeout: float | None = None
    retry: RetryPolicy | None = DEFAULT_RETRY
    fault: FaultPolicy | None = None
    redirect: GatewayRedirect | IstioRedirect | None = None
    rewrite: GatewayRewrite | IstioRewrite | None = None
    response: DirectResponse | None = None
    no_backend_status: int = 500
    _decisions: tuple[RouteDecision, ...] = field(default=(), init=False)
    _cumulative: tuple[int, ...] = field(default=(), init=False)
    _total: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        live = [b for b in self.backends if b.weight > 0]
        total = 0
        cumulative = []
        for backend in live:
            total += backend.weight
            cumulative.append(total)
        self._cumulative = tuple(cumulative)
        self._total = total
        self._decisions = tuple(self._decision_for(b) for b in live)

    def _decision_for(self, weighted: WeightedBackend) -> RouteDecision:
        if weighted.backend is None:
            return error_decision(self.route, weighted.error_status, weighted.error_reason)
        return RouteDecision(
            self.route,
            backend=weighted.backend,
            request_headers=merge_header_ops((self.request_headers, weighted.request_headers)),
            response_headers=merge_header_ops((self.response_headers, weighted.response_headers)),
            mirrors=self.mirrors,
            timeout=self.timeout,
            retry=self.retry,
            fault=self.fault,
        )

    def decide(self, target: Target, request: RequestHead, path: str, rng: Rng) -> RouteDecision:
        """The decision for a request whose path (without query) is ``path``."""
        if self.redirect is not None:
            response = self.redirect.respond(target, request, path)
            return RouteDecision(
                self.route, response=response, response_headers=self.response_headers
            )
        if self.response is not None:
            return RouteDecision(
                self.route, response=self.response, response_headers=self.response_headers
            )
        decisions = self._decisions
        if not decisions:
            reason = "no backend" if not self.backends else "all backends have weight 0"
            return error_decision(self.route, self.no_backend_status, reason)
        if len(decisions) == 1:
            decision = decisions[0]
        else:
            pick = rng.randrange(self._total)
            decision = decisions[bisect.bisect_right(self._cumulative, pick)]
        if self.rewrite is None or decision.backend is None:
            return decision
        new_path, authority = self.rewrite.rewrite(request, path)
        return dataclasses.replace(decision, path=new_path, authority=authority)
