"""Resilience at the waypoint: retries, fault injection, connection-pool limits, outlier detection.

Each concern is a sans-io policy (frozen data built once from the
configuration) plus, where state is needed, a small synchronous bookkeeping
class the proxy calls at the edges of an exchange:

- ``retry``: ``RetryPolicy`` (VirtualService ``retries``, HTTPRoute ``retry``,
  Istio's default) and the decision "is this outcome worth another attempt";
- ``fault``: ``FaultPolicy`` (VirtualService ``fault``) and the per-request roll;
- ``pool``: ``ClusterLimits`` for a ``config.destinationrule.PoolPolicy``
  (DestinationRule ``connectionPool``),, Envoy's circuit breakers for one cluster;
- ``outlier``: ``OutlierDetector`` for an ``OutlierPolicy`` (DestinationRule
  ``outlierDetection``),, which ejects endpoints for a time.
"""

from ambient.waypoint.resilience.fault import FaultPolicy, FaultRoll
from ambient.waypoint.resilience.outlier import OutlierDetector
from ambient.waypoint.resilience.pool import ClusterLimits, Overflow
from ambient.waypoint.resilience.retry import (
    DEFAULT_RETRY,
    Attempt,
    Failure,
    RetryPolicy,
)

__all__ = [
    "DEFAULT_RETRY",
    "Attempt",
    "ClusterLimits",
    "Failure",
    "FaultPolicy",
    "FaultRoll",
    "OutlierDetector",
    "Overflow",
    "RetryPolicy",
]
