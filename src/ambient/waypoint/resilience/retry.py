"""Retry policy with Envoy's ``retry_on`` conditions and Istio's defaults.

Istio's translation (``ConvertPolicy`` in istiod) is followed:

- No ``retries`` on a route: Istio's default policy, 2 retries on
  ``connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes``
  with status 503, preferring hosts not tried yet (Envoy's ``previous_hosts``
  predicate, which Istio always adds), base back-off 25 ms.
- ``attempts: 0`` disables retries. ``attempts`` are *retries*: the request is
  sent at most ``attempts + 1`` times.
- ``retryOn`` replaces the default conditions; bare status codes in it become
  retriable status codes (``retriable-status-codes`` is then implied). Without
  ``retryOn`` the default conditions stay.
- ``retryRemoteLocalities`` is accepted and has no effect: there is one locality.

Conditions (Envoy's ``x-envoy-retry-on`` semantics):

- ``5xx``: any 5xx response, a connection failure, a reset before the response
  head, or a per-try timeout;
- ``gateway-error``: 502/503/504, a connection failure, reset or per-try timeout;
- ``reset``: the upstream closed or reset before a response head, or the per-try
  timeout fired; ``reset-before-request``: only connection failures (nothing of
  the request reached the application);
- ``connect-failure``: the HBONE tunnel to the endpoint could not be opened
  (``UF``); ``refused-stream``: an HTTP/2 upstream refused the stream
  (RST_STREAM REFUSED_STREAM, or a stream past a GOAWAY: nothing was
  processed), and also a tunnel the endpoint's ztunnel refused (the waypoint
  sees that as a connection failure, so both conditions cover it);
- ``retriable-4xx``: 409; ``retriable-status-codes``: the listed codes;
- gRPC (``grpc-status`` in the response head, i.e. trailers-only answers):
  ``cancelled`` 1, ``deadline-exceeded`` 4, ``resource-exhausted`` 8,
  ``internal`` 13, ``unavailable`` 14;
- accepted, never matching here: ``retriable-headers`` (Istio offers no way to
  name the headers), ``envoy-ratelimited``, ``http3-post-connect-failure``.

Back-off is Envoy's fully jittered exponential: before retry *n* (1-based) the
wait is uniform in ``[0, min((2^n - 1) * base, max)]``, ``max`` = 10 x base.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ambient.config.l7fields import GRPC_CONDITIONS, parse_retry_on

__all__ = [
    "DEFAULT_RETRY",
    "Attempt",
    "Failure",
    "RetryPolicy",
]

DEFAULT_BACKOFF = 0.025


class Failure(enum.Enum):
    """Why an attempt produced no response head."""

    CONNECT = "connect"  # UF: the tunnel to the endpoint did not open
    REFUSED = "refused"  # UR: an HTTP/2 upstream refused the stream unprocessed
    RESET = "reset"  # UC/UR: the connection or stream ended before a response head
    TIMEOUT = "timeout"  # the per-try timeout fired before a response head


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one attempt: a response head's status (and grpc-status), or a failure."""

    status: int = 0
    grpc_status: str = ""
    failure: Failure | None = None


class _Rng(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and on what to retry one route's requests."""

    retries: int = 2
    retry_on: frozenset[str] = frozenset(
        {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
    )
    status_codes: frozenset[int] = frozenset({503})
    per_try_timeout: float | None = None  # seconds until the response head; None: no limit
    backoff: float = DEFAULT_BACKOFF  # base interval, seconds
    other_hosts: bool = True  # Envoy's previous_hosts predicate (Istio adds it by default)

    @staticmethod
    def build(
        attempts: int,
        retry_on: str | None = None,
        per_try_timeout: float | None = None,
        backoff: float | None = None,
        ignore_previous_hosts: bool | None = None,
    ) -> RetryPolicy | None:
        """Istio's ``HTTPRetry`` -> a policy (None: retries disabled, ``attempts: 0``)."""
        if attempts <= 0:
            return None
        base = RetryPolicy()
        conditions, codes = base.retry_on, base.status_codes
        if retry_on:
            conditions, codes, _ = parse_retry_on(retry_on)
        return RetryPolicy(
            retries=attempts,
            retry_on=conditions,
            status_codes=codes,
            per_try_timeout=per_try_timeout or None,
            backoff=backoff or DEFAULT_BACKOFF,
            other_hosts=base.other_hosts
            if ignore_previous_hosts is None
            else ignore_previous_hosts,
        )

    def retriable(self, attempt: Attempt) -> bool:
        """Whether ``attempt``'s outcome is one of this policy's retry conditions."""
        on = self.retry_on
        failure = attempt.failure
        if failure is Failure.CONNECT:
            return bool(
                on
                & {
                    "connect-failure",
                    "refused-stream",
                    "reset",
                    "reset-before-request",
                    "5xx",
                    "gateway-error",
                }
            )
        if failure is Failure.REFUSED:
            return bool(
                on & {"refused-stream", "reset", "reset-before-request", "5xx", "gateway-error"}
            )
        if failure is not None:  # reset or per-try timeout
            return bool(on & {"reset", "5xx", "gateway-error"})
        status = attempt.status
        if "5xx" in on and status >= 500:
            return True
        if "gateway-error" in on and status in (502, 503, 504):
            return True
        if "retriable-4xx" in on and status == 409:
            return True
        if "retriable-status-codes" in on and status in self.status_codes:
            return True
        if attempt.grpc_status:
            return any(
                attempt.grpc_status == code and name in on for name, code in GRPC_CONDITIONS.items()
            )
        return False

    def backoff_delay(self, retry_number: int, rng: _Rng) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        ceiling = min(((1 << retry_number) - 1) * self.backoff, 10 * self.backoff)
        return rng.random() * ceiling


DEFAULT_RETRY = RetryPolicy()
