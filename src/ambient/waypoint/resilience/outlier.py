"""DestinationRule ``outlierDetection``: eject endpoints that keep failing, for a while.

Envoy's consecutive-errors detection, as Istio configures it:

- by default (``splitExternalLocalOriginErrors`` false) an attempt that got a
  5xx, or no response (connection failure: counted as 503; reset: 503;
  timeout: 504) is an error; anything else resets the counts.
  ``consecutive5xxErrors`` (default 5, 0 disables) counts every 5xx;
  ``consecutiveGatewayErrors`` (default 0: off) counts 502, 503 and 504 (a
  500 resets it). ``outlierDetectionHttpErrorCodes``, when set, replaces "5xx"
  by exactly those codes (a gateway error is then one of them that is 502, 503
  or 504).
- ``splitExternalLocalOriginErrors: true`` keeps the waypoint's own failures
  apart, as Envoy's split mode: a *locally originated* failure (the endpoint
  could not be reached, the stream was reset or refused, the per-try timeout
  fired before a response) counts only toward ``consecutiveLocalOriginFailures``
  (default 5: istiod leaves Envoy's default in place for 0 or unset), and
  never toward the 5xx and gateway counts, which then see only the answers the
  application sent. Any response head from the endpoint is a local-origin
  success (it resets that count); a non-error response resets the other two.
- reaching a threshold ejects the endpoint at once for ``baseEjectionTime``
  x the number of times it has been ejected (capped at 300 s, Envoy's
  ``max_ejection_time``); each ``interval`` it spends back in service
  lowers that multiplier by one.
- ``maxEjectionPercent`` (default 10): no ejection while the ejected share of
  the cluster's endpoints is already at or above it (so one endpoint can be
  ejected whenever it is above 0, as in Envoy).
- ``minHealthPercent`` (default 0): when fewer than that percent of endpoints
  are in service, ejections are ignored and every endpoint is used (Envoy's
  panic threshold). At 0, a cluster whose endpoints are all ejected has no
  healthy upstream (503 ``UH``).

Decision: the return to service is checked when an endpoint is next
considered, not on an ``interval`` sweep, so an ejection lasts exactly its
time (Envoy's sweep can add up to one interval).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ambient.config.destinationrule import OutlierPolicy
from ambient.waypoint.resilience.retry import Attempt, Failure

__all__ = ["OutlierDetector"]

E = TypeVar("E")
MAX_EJECTION_TIME = 300.0


@dataclass(slots=True)
class _Host:
    errors_5xx: int = 0
    errors_gateway: int = 0
    errors_local: int = 0
    ejected_until: float = 0.0
    multiplier: int = 0
    back_since: float = 0.0  # when it last returned to service
    ejections: int = field(default=0)


def _status_of(attempt: Attempt) -> int:
    if attempt.failure is Failure.TIMEOUT:
        return 504
    if attempt.failure is not None:
        return 503
    return attempt.status


_GATEWAY = (502, 503, 504)


class OutlierDetector:
    """Error counts and ejections for the endpoints of one cluster."""

    def __init__(self, policy: OutlierPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._hosts: dict[Hashable, _Host] = {}

    def record(self, key: Hashable, attempt: Attempt, cluster_size: int) -> bool:
        """Account one attempt's outcome on endpoint ``key``; True when it was ejected now."""
        policy = self.policy
        host = self._hosts.get(key)
        split = policy.split_local_origin
        local_failure = attempt.failure is not None
        if split and not local_failure and host is not None:
            host.errors_local = 0  # the endpoint answered: a local-origin success
        status = _status_of(attempt)
        error = (
            status in policy.error_codes
            if policy.error_codes and attempt.failure is None
            else status >= 500
        )
        if not error:
            if host is not None:
                host.errors_5xx = host.errors_gateway = 0
            return False
        if host is None:
            host = self._hosts[key] = _Host()
        now = self.clock()
        if host.ejected_until > now:
            return False  # an attempt that started before the ejection
        if split and local_failure:
            host.errors_local += 1
            threshold = policy.consecutive_local_origin or 5
            if host.errors_local < threshold:
                return False
        else:
            host.errors_5xx += 1
            if status in _GATEWAY:
                host.errors_gateway += 1
            else:
                host.errors_gateway = 0
            tripped = (
                policy.consecutive_5xx > 0 and host.errors_5xx >= policy.consecutive_5xx
            ) or (
                policy.consecutive_gateway > 0 and host.errors_gateway >= policy.consecutive_gateway
            )
            if not tripped:
                return False
        host.errors_5xx = host.errors_gateway = host.errors_local = 0
        ejected = sum(1 for h in self._hosts.values() if h.ejected_until > now)
        if cluster_size <= 0 or 100 * ejected / cluster_size >= policy.max_ejection_percent:
            return False
        if host.multiplier and host.back_since:
            rested = int((now - host.back_since) / policy.interval) if policy.interval else 0
            host.multiplier = max(0, host.multiplier - rested)
        host.multiplier += 1
        host.ejections += 1
        duration = min(
            policy.base_ejection * host.multiplier, max(MAX_EJECTION_TIME, policy.base_ejection)
        )
        host.ejected_until = now + duration
        host.back_since = host.ejected_until
        return True

    def _forget_departed(self, endpoints: Sequence[E], key: Callable[[E], Hashable]) -> None:
        """Drop the state of endpoints no longer in the cluster, as Envoy does when a host
        is removed: with pods coming and going (every rollout brings new addresses) the
        record would otherwise grow for ever. Checked only when the record holds more
        hosts than the cluster has endpoints (then one certainly left), so it never does
        for long, at no cost per request otherwise."""
        present = {key(e) for e in endpoints}
        for gone in [k for k in self._hosts if k not in present]:
            del self._hosts[gone]

    def is_ejected(self, key: Hashable) -> bool:
        host = self._hosts.get(key)
        return host is not None and host.ejected_until > self.clock()

    def select(self, endpoints: Sequence[E], key: Callable[[E], Hashable]) -> Sequence[E]:
        """The endpoints to balance over: those in service, or all of them in panic."""
        if not self._hosts or not endpoints:
            return endpoints
        hosts = self._hosts
        if len(hosts) > len(endpoints):  # some endpoint left the cluster: forget it
            self._forget_departed(endpoints, key)
        now = self.clock()
        healthy = [
            e for e in endpoints if (h := hosts.get(key(e))) is None or h.ejected_until <= now
        ]
        if len(healthy) == len(endpoints):
            return endpoints
        if 100 * len(healthy) < self.policy.min_health_percent * len(endpoints):
            return endpoints  # panic: below minHealthPercent, outlier detection steps aside
        return healthy
