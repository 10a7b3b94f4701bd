"""Resilience at the waypoint: retries, fault injection, connection-pool limits, outlier detection.

Each concern is a sans-io policy (frozen data built once from the
configuration) plus, where state is needed, a small synchronous bookkeeping
class the proxy calls at the edges of an exchange:

- ``retry``: ``RetryPolicy`` (VirtualService ``retries``, HTTPRoute ``retry``,
  Istio's default) and the decision "is this outcome worth another attempt";
- ``fault``: ``FaultPolicy`` (VirtualService ``fault``) and the per-request roll;
- ``pool``: ``PoolPolicy`` (DestinationRule ``connectionPool``) and
  ``ClusterLimits``, Envoy's circuit breakers for one cluster;
- ``outlier``: ``OutlierPolicy`` (DestinationRule ``outlierDetection``) and
  ``OutlierDetector``, which ejects endpoints for a time.
"""

from ambient.waypoint.resilience.fault import FaultPolicy, FaultRoll
from ambient.waypoint.resilience.outlier import OutlierDetector, OutlierPolicy
from ambient.waypoint.resilience.pool import ClusterLimits, Overflow, PoolPolicy
from ambient.waypoint.resilience.retry import (
    DEFAULT_RETRY,
    Attempt,
    Failure,
    RetryPolicy,
    parse_retry_on,
)

__all__ = [
    "DEFAULT_RETRY",
    "Attempt",
    "ClusterLimits",
    "Failure",
    "FaultPolicy",
    "FaultRoll",
    "OutlierDetector",
    "OutlierPolicy",
    "Overflow",
    "PoolPolicy",
    "RetryPolicy",
    "parse_retry_on",
]
