"""Fault injection (VirtualService ``http[].fault``), applied before forwarding.

Istio's semantics: a ``delay`` holds the request for ``fixedDelay`` before it
goes on; an ``abort`` answers it with ``httpStatus`` (or, for gRPC,
``grpcStatus``: HTTP 200 with ``grpc-status``) without contacting the
backend. Each applies to ``percentage.value`` percent of requests, drawn
independently; **without a percentage none is affected** (Istio's
documented default, warned about at load). Delay and abort are independent:
a request can be delayed and then aborted. Response flags: ``DI`` (delayed),
``FI`` (aborted). As in Envoy, the fault filter runs before the router, so the
delay does not count against the route timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["FaultPolicy", "FaultRoll"]


class _Rng(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class FaultRoll:
    """What to do to one request: wait ``delay`` seconds (0: none), then maybe abort."""

    delay: float = 0.0
    abort_status: int | None = None  # HTTP status
    abort_grpc: int | None = None  # gRPC status (HTTP 200, trailers-only)

    @property
    def aborts(self) -> bool:
        return self.abort_status is not None or self.abort_grpc is not None


_NOTHING = FaultRoll()


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    delay: float = 0.0  # seconds
    delay_percent: float = 0.0
    abort_status: int | None = None
    abort_grpc: int | None = None
    abort_percent: float = 0.0

    def roll(self, rng: _Rng) -> FaultRoll:
        """Draw this request's faults (two independent draws, as Envoy)."""
        delay = 0.0
        if self.delay > 0 and self.delay_percent > 0 and rng.random() * 100 < self.delay_percent:
            delay = self.delay
        aborted = (
            (self.abort_status is not None or self.abort_grpc is not None)
            and self.abort_percent > 0
            and rng.random() * 100 < self.abort_percent
        )
        if not delay and not aborted:
            return _NOTHING
        if not aborted:
            return FaultRoll(delay)
        return FaultRoll(delay, self.abort_status, self.abort_grpc)
