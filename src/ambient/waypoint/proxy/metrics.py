"""The waypoint's Istio metrics: HTTP request metrics and TCP metrics for passed-through traffic.

HTTP (one observation per request, when it ends): ``istio_requests_total``,
``istio_request_duration_milliseconds``, ``istio_request_bytes``,
``istio_response_bytes``; TCP (tunnels passed through as TCP):
``istio_tcp_connections_opened_total``/``_closed_total``,
``istio_tcp_sent_bytes_total``/``_received_bytes_total``. Labels are Istio's
standard set with ``reporter="waypoint"``; histograms use Istio's default
buckets. Each Waypoint has its own registry (served on :15020).

Label children are cached per label set (resolving labels costs tens of
microseconds in prometheus_client, paid per request otherwise), and each request
is counted straight into the children's values (:class:`_Observer`):
prometheus_client's ``observe`` checks the child per call and walks the bucket
bounds in Python; here the bucket is found with one ``bisect`` and the values
(the same objects, locks included) are incremented directly. The exposition is
the same (a test compares the two ways).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.values import MutexValue

from ambient.monitoring.exposition import disable_created
from ambient.state.workload import Service, Workload
from ambient.ztunnel.metrics import LABELS as TCP_LABELS

__all__ = ["HTTP_LABELS", "REPORTER", "UNKNOWN", "WaypointMetrics", "label_values"]

disable_created()  # Istio emits no _created series

REPORTER = "waypoint"
UNKNOWN = "unknown"
HTTP_LABELS = (*TCP_LABELS, "response_code", "grpc_response_status")

# Envoy's default histogram buckets (ms), which Istio keeps for request duration.
DURATION_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip
# Istio's size buckets: powers of ten from 1 B to 1 GB.
SIZE_BUCKETS = tuple(float(10**i) for i in range(10))

_CACHE_LIMIT = 100_000  # label sets come from workloads and status codes: bounded in practice


def label_values(
    *,
    source: Workload | None,
    source_principal: str | None,
    destination: Workload | None,
    destination_principal: str | None,
    service: Service | None,
    service_fallback: str,
    request_protocol: str,
    response_flags: str,
) -> dict[str, str]:
    """Istio's standard labels (the TCP set) for one request or connection."""
    src, dst, svc = source, destination, service
    return {
        "reporter": REPORTER,
        "source_workload": src.workload_name or src.name if src else UNKNOWN,
        "source_canonical_service": src.canonical_name or UNKNOWN if src else UNKNOWN,
        "source_canonical_revision": src.canonical_revision or UNKNOWN if src else UNKNOWN,
        "source_workload_namespace": src.namespace if src else UNKNOWN,
        "source_principal": source_principal or UNKNOWN,
        "source_app": src.canonical_name or UNKNOWN if src else UNKNOWN,
        "source_version": src.canonical_revision or UNKNOWN if src else UNKNOWN,
        "source_cluster": src.cluster_id if src else UNKNOWN,
        "destination_service": svc.hostname if svc else service_fallback,
        "destination_service_namespace": svc.namespace if svc else UNKNOWN,
        "destination_service_name": svc.name if svc else UNKNOWN,
        "destination_workload": dst.workload_name or dst.name if dst else UNKNOWN,
        "destination_canonical_service": dst.canonical_name or UNKNOWN if dst else UNKNOWN,
        "destination_canonical_revision": dst.canonical_revision or UNKNOWN if dst else UNKNOWN,
        "destination_workload_namespace": dst.namespace if dst else UNKNOWN,
        "destination_principal": destination_principal or UNKNOWN,
        "destination_app": dst.canonical_name or UNKNOWN if dst else UNKNOWN,
        "destination_version": dst.canonical_revision or UNKNOWN if dst else UNKNOWN,
        "destination_cluster": dst.cluster_id if dst else UNKNOWN,
        "request_protocol": request_protocol,
        "response_flags": response_flags,
        "connection_security_policy": "mutual_tls",  # a waypoint only accepts HBONE (mTLS)
    }


class _Histogram:
    """One histogram child's values: its sum, its buckets and their upper bounds."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, child: Any) -> None:
        self.sum = child._sum
        self.buckets = child._buckets
        self.bounds = child._upper_bounds  # ascending, the last +Inf

    def observe(self, amount: float) -> None:
        """As ``Histogram.observe``: the first bucket whose bound is >= ``amount``."""
        self.sum.inc(amount)
        self.buckets[bisect_left(self.bounds, amount)].inc(1)


class _Observer:
    """One HTTP label set: the four children, and their values for the fast path.

    The values are prometheus_client's ``MutexValue`` (a float behind a lock, against
    other threads): the waypoint counts from its event loop's thread only, so when every
    value is one (not multiprocess mode), :meth:`observe` adds to the floats directly,
    one call per request instead of ten and seven lock round trips; a scrape from any
    thread still reads each value under its lock (an int/float store is atomic)."""

    __slots__ = ("children", "count", "direct", "duration", "request_bytes", "response_bytes")

    def __init__(self, children: tuple[Any, Any, Any, Any]) -> None:
        self.children = children
        requests, duration, request_bytes, response_bytes = children
        self.count = requests._value
        self.duration = _Histogram(duration)
        self.request_bytes = _Histogram(request_bytes)
        self.response_bytes = _Histogram(response_bytes)
        values = [self.count]
        for histogram in (self.duration, self.request_bytes, self.response_bytes):
            values += [histogram.sum, *histogram.buckets]
        self.direct = all(type(value) is MutexValue for value in values)

    def observe(self, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """Count one request (all four metrics)."""
        if not self.direct:
            self.count.inc(1)
            self.duration.observe(duration_ms)
            self.request_bytes.observe(request_bytes)
            self.response_bytes.observe(response_bytes)
            return
        self.count._value += 1
        histogram = self.duration
        histogram.sum._value += duration_ms
        histogram.buckets[bisect_left(histogram.bounds, duration_ms)]._value += 1
        histogram = self.request_bytes
        histogram.sum._value += request_bytes
        histogram.buckets[bisect_left(histogram.bounds, request_bytes)]._value += 1
        histogram = self.response_bytes
        histogram.sum._value += response_bytes
        histogram.buckets[bisect_left(histogram.bounds, response_bytes)]._value += 1


class WaypointMetrics:
    """The Prometheus instruments of one waypoint, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "istio_requests_total", "Requests handled by an Istio proxy", HTTP_LABELS, registry=r
        )
        self.duration = Histogram(
            "istio_request_duration_milliseconds",
            "Duration of requests",
            HTTP_LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.request_bytes = Histogram(
            "istio_request_bytes",
            "HTTP request body sizes",
            HTTP_LABELS,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.response_bytes = Histogram(
            "istio_response_bytes",
            "HTTP response body sizes",
            HTTP_LABELS,
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.tcp_opened = Counter(
            "istio_tcp_connections_opened", "TCP connections opened", TCP_LABELS, registry=r
        )
        self.tcp_closed = Counter(
            "istio_tcp_connections_closed", "TCP connections closed", TCP_LABELS, registry=r
        )
        self.tcp_sent = Counter(
            "istio_tcp_sent_bytes", "Bytes sent towards the client", TCP_LABELS, registry=r
        )
        self.tcp_received = Counter(
            "istio_tcp_received_bytes", "Bytes received from the client", TCP_LABELS, registry=r
        )
        self._http: dict[tuple[Any, ...], _Observer] = {}
        self._tcp: dict[tuple[Any, ...], tuple[Any, Any, Any, Any]] = {}

    def observe_request(
        self,
        key: tuple[Any, ...],
        labels: Any,
        *,
        duration_ms: float,
        request_bytes: int,
        response_bytes: int,
        disabled: frozenset[str] = frozenset(),
    ) -> None:
        """Count one finished request. ``labels`` is called for the label dict on a cache miss;
        metrics named in ``disabled`` (a Telemetry's overrides) are left alone."""
        observer = self._http.get(key)
        if observer is None:
            values = labels()
            observer = _Observer(
                (
                    self.requests.labels(**values),
                    self.duration.labels(**values),
                    self.request_bytes.labels(**values),
                    self.response_bytes.labels(**values),
                )
            )
            if len(self._http) < _CACHE_LIMIT:
                self._http[key] = observer
        if not disabled:
            observer.observe(duration_ms, request_bytes, response_bytes)
            return
        requests, duration, req_bytes, resp_bytes = observer.children
        if "istio_requests_total" not in disabled:
            requests.inc()
        if "istio_request_duration_milliseconds" not in disabled:
            duration.observe(duration_ms)
        if "istio_request_bytes" not in disabled:
            req_bytes.observe(request_bytes)
        if "istio_response_bytes" not in disabled:
            resp_bytes.observe(response_bytes)

    def tcp_children(self, key: tuple[Any, ...], labels: Any) -> tuple[Any, Any, Any, Any]:
        """(opened, closed, sent, received) for one TCP label set."""
        children = self._tcp.get(key)
        if children is None:
            values = labels()
            children = (
                self.tcp_opened.labels(**values),
                self.tcp_closed.labels(**values),
                self.tcp_sent.labels(**values),
                self.tcp_received.labels(**values),
            )
            if len(self._tcp) < _CACHE_LIMIT:
                self._tcp[key] = children
        return children
