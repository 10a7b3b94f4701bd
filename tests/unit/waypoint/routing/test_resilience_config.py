"""Retries, faults, connectionPool and outlierDetection: validation at load, and what the router hands over."""

from __future__ import annotations

import pytest

from ambient.config import ConfigError, load_text
from ambient.config.destinationrule import UNLIMITED, OutlierPolicy, PoolPolicy
from ambient.waypoint.resilience.retry import DEFAULT_RETRY
from tests.unit.config.test_l7_load_errors import DR, HTTPROUTE, VS
from tests.unit.waypoint.routing.helpers import request, router, target

ROUTE = "\n    route: [{destination: {host: orders}}]"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            VS.format(rule="retries: {attempts: -1}" + ROUTE),
            "VirtualService/bad: spec.http[0].retries.attempts: must be at least 0, got -1",
        ),
        (
            VS.format(rule="retries: {attempts: 2, perTryTimeout: 2 seconds}" + ROUTE),
            "spec.http[0].retries.perTryTimeout: expected a duration such as '2s', '0.5s' or '100ms', got '2 seconds'",
        ),
        (
            VS.format(rule="retries: {attempts: 2, perTryTimeout: 0s}" + ROUTE),
            "spec.http[0].retries.perTryTimeout: must be at least 1ms, got '0s'",
        ),
        (
            VS.format(rule="retries: {attempts: 2, retryOn: '5xx,sometimes'}" + ROUTE),
            "spec.http[0].retries.retryOn: unknown retry condition 'sometimes'",
        ),
        (
            VS.format(rule="retries: {attempts: 2, retryOn: '5xx,999'}" + ROUTE),
            "spec.http[0].retries.retryOn: '999' is not an HTTP status code",
        ),
        (
            VS.format(rule="fault: {}" + ROUTE),
            "spec.http[0].fault: set delay, abort or both",
        ),
        (
            VS.format(rule="fault: {abort: {httpStatus: 503, percentage: {value: 101}}}" + ROUTE),
            "spec.http[0].fault.abort.percentage.value: expected a number between 0 and 100, got 101",
        ),
        (
            VS.format(rule="fault: {abort: {httpStatus: 700}}" + ROUTE),
            "spec.http[0].fault.abort.httpStatus: must be between 200 and 599, got 700",
        ),
        (
            VS.format(rule="fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}" + ROUTE),
            "spec.http[0].fault.abort: set exactly one of httpStatus, grpcStatus",
        ),
        (
            VS.format(rule="fault: {abort: {grpcStatus: NOPE}}" + ROUTE),
            "spec.http[0].fault.abort.grpcStatus: must be one of",
        ),
        (
            VS.format(rule="fault: {delay: {percentage: {value: 5}}}" + ROUTE),
            "spec.http[0].fault.delay.fixedDelay: missing required field",
        ),
        (
            VS.format(rule="fault: {delay: {exponentialDelay: 1s}}" + ROUTE),
            "spec.http[0].fault.delay.exponentialDelay: not supported",
        ),
        (
            DR.format(rest="trafficPolicy: {connectionPool: {tcp: {maxConnections: -5}}}"),
            "DestinationRule/bad: spec.trafficPolicy.connectionPool.tcp.maxConnections: must be at least 0, got -5",
        ),
        (
            DR.format(rest="trafficPolicy: {connectionPool: {http: {idleTimeout: soon}}}"),
            "spec.trafficPolicy.connectionPool.http.idleTimeout: expected a duration",
        ),
        (
            DR.format(rest="trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}"),
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 101",
        ),
        (
            DR.format(rest="trafficPolicy: {outlierDetection: {baseEjectionTime: -1s}}"),
            "spec.trafficPolicy.outlierDetection.baseEjectionTime: expected a duration",
        ),
        (
            HTTPROUTE.format(
                rule="retry: {codes: [200]}\n    backendRefs: [{name: orders, port: 8080}]"
            ),
            "HTTPRoute/bad: spec.rules[0].retry.codes[0]: must be between 400 and 599, got 200",
        ),
        (
            HTTPROUTE.format(
                rule="retry: {attempts: -2}\n    backendRefs: [{name: orders, port: 8080}]"
            ),
            "spec.rules[0].retry.attempts: must be at least 0, got -2",
        ),
    ],
)
def test_bad_values_are_refused_with_their_field_path(doc: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(doc, "routes.yaml")
    text = str(caught.value)
    assert "routes.yaml:1:" in text
    assert expected in text, text


def test_disabled_retries_with_settings_warn() -> None:
    config = load_text(VS.format(rule="retries: {attempts: 0, retryOn: 5xx}" + ROUTE), "r.yaml")
    assert [f"{w.path}: {w.message}" for w in config.warnings] == [
        "spec.http[0].retries: retries are disabled by attempts: 0; the other retry fields do nothing"
    ]


VS_OK = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: orders, subset: v1}}]
  - match: [{uri: {prefix: /custom}}]
    retries: {attempts: 4, perTryTimeout: 250ms, retryOn: "gateway-error,409", backoff: 50ms}
    fault:
      delay: {fixedDelay: 1.5s, percentage: {value: 12.5}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
    route: [{destination: {host: orders, subset: v2}}]
  - route: [{destination: {host: orders, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: orders, namespace: shop}
spec:
  host: orders
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 3, maxRetries: 0, maxRequestsPerConnection: 7, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 4, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 50}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {http: {http2MaxRequests: 5}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {consecutiveErrors: 2}
"""


def test_virtual_service_retries_and_faults_reach_the_decision() -> None:
    table = router(VS_OK)
    svc = target("orders", 8080, "shop")
    default = table.route(svc, request("/"))
    assert default.retry == DEFAULT_RETRY and default.fault is None
    assert table.route(svc, request("/none")).retry is None
    custom = table.route(svc, request("/custom"))
    assert custom.retry is not None
    assert custom.retry.retries == 4
    assert custom.retry.per_try_timeout == 0.25 and custom.retry.backoff == 0.05
    assert custom.retry.retry_on == {"gateway-error", "retriable-status-codes"}
    assert custom.retry.status_codes == {409}
    assert custom.fault is not None
    assert (custom.fault.delay, custom.fault.delay_percent) == (1.5, 12.5)
    assert (custom.fault.abort_grpc, custom.fault.abort_status, custom.fault.abort_percent) == (
        14,
        None,
        1.0,
    )


def test_destination_rule_merges_as_istiod_for_each_subset() -> None:
    table = router(VS_OK)
    svc = target("orders", 8080, "shop")
    plain = table.route(svc, request("/")).backend
    assert plain is not None
    assert plain.pool == PoolPolicy(
        max_connections=10,
        max_pending=3,
        max_requests=UNLIMITED,
        max_requests_per_connection=7,
        max_retries=UNLIMITED,  # 0 means unset, as in Istio
        idle_timeout=30.0,
        connect_timeout=2.0,
    )
    assert plain.outlier == OutlierPolicy(
        consecutive_5xx=4, interval=1.0, base_ejection=2.0, max_ejection_percent=50
    )
    v1 = table.route(svc, request("/none")).backend
    assert v1 is not None and v1.subset == "v1"
    assert v1.pool == PoolPolicy(max_connections=1)  # the subset's pool replaces the rule's
    assert v1.outlier == plain.outlier  # not set on the subset: inherited
    v2 = table.route(svc, request("/custom")).backend
    assert v2 is not None and v2.pool == plain.pool
    assert v2.outlier == OutlierPolicy(consecutive_5xx=0, consecutive_gateway=2)  # deprecated field


def test_port_level_settings_replace_without_inheriting() -> None:
    from ambient.waypoint.routing import MeshService

    services = [MeshService("shop", "orders", "orders.shop.svc.cluster.local", (8080, 9090))]
    table = router(VS_OK.split("---\n")[1], services)
    backend = table.route(target("orders", 9090, "shop"), request("/")).backend
    assert backend is not None
    assert backend.pool == PoolPolicy(max_requests=5)
    assert backend.outlier is None  # the port-level entry has none: no inheritance


def test_httproute_retry_as_istio_translates_it() -> None:
    doc = HTTPROUTE.format(
        rule="retry: {codes: [500, 502], backoff: 100ms}\n"
        "    timeouts: {request: 5s, backendRequest: 1s}\n"
        "    backendRefs: [{name: orders, port: 8080}]"
    ).replace("name: bad", "name: orders")
    decision = router(doc).route(target("orders", 8080, "shop"), request("/"))
    assert decision.retry is not None
    assert decision.retry.retries == 2
    assert decision.retry.retry_on == {
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    }
    assert decision.retry.status_codes == {500, 502}
    assert decision.retry.backoff == 0.1 and decision.retry.per_try_timeout == 1.0
    assert decision.timeout == 5.0


def test_httproute_without_retry_gets_the_default_and_backend_timeout() -> None:
    doc = HTTPROUTE.format(
        rule="timeouts: {request: 5s, backendRequest: 1s}\n    backendRefs: [{name: orders, port: 8080}]"
    )
    decision = router(doc).route(target("orders", 8080, "shop"), request("/"))
    assert decision.retry == DEFAULT_RETRY and decision.timeout == 1.0
    off = HTTPROUTE.format(
        rule="retry: {attempts: 0}\n    backendRefs: [{name: orders, port: 8080}]"
    )
    assert router(off).route(target("orders", 8080, "shop"), request("/")).retry is None
