"""The waypoint counts a request straight into prometheus_client's values: the exposition
must be exactly what the library's own ``inc``/``observe`` give for the same requests."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from ambient.waypoint.proxy.metrics import (
    DURATION_BUCKETS,
    HTTP_LABELS,
    SIZE_BUCKETS,
    WaypointMetrics,
)

# every bound exactly (<= goes to that bucket), around each bound, zero, and past the last
AMOUNTS = sorted(
    {0.0, 0.1, 1e12, float("inf")}
    | {b for b in DURATION_BUCKETS + SIZE_BUCKETS}
    | {b * 0.999 for b in DURATION_BUCKETS + SIZE_BUCKETS}
    | {b * 1.001 for b in DURATION_BUCKETS + SIZE_BUCKETS}
)


def labels(code: str) -> dict[str, str]:
    values = {name: "x" for name in HTTP_LABELS}
    values["response_code"] = code
    return values


@pytest.mark.parametrize("direct", [True, False])
def test_fast_counting_exposes_what_the_library_would(direct: bool) -> None:
    """``direct``: the floats are added to without their locks (the usual case); else the
    values' own ``inc`` (a value that is not a plain ``MutexValue``)."""
    fast, reference = WaypointMetrics(), WaypointMetrics()
    for i, amount in enumerate(AMOUNTS):
        for observer in fast._http.values():
            assert observer.direct or not direct  # plain MutexValues: the lock-free path
            observer.direct = direct
        code = "200" if i % 3 else "503"  # two label sets, each observed many times
        fast.observe_request(
            (code,), lambda c=code: labels(c),
            duration_ms=amount, request_bytes=int(min(amount, 1e15)), response_bytes=i,
        )  # fmt: skip
        values = labels(code)
        reference.requests.labels(**values).inc()
        reference.duration.labels(**values).observe(amount)
        reference.request_bytes.labels(**values).observe(int(min(amount, 1e15)))
        reference.response_bytes.labels(**values).observe(i)
    assert generate_latest(fast.registry) == generate_latest(reference.registry)


def test_disabled_metrics_are_left_alone() -> None:
    metrics = WaypointMetrics()
    disabled = frozenset({"istio_request_duration_milliseconds", "istio_requests_total"})
    for _ in range(3):
        metrics.observe_request(("k",), lambda: labels("200"), duration_ms=3.0,
                                request_bytes=10, response_bytes=20, disabled=disabled)  # fmt: skip
    values = labels("200")
    assert metrics.requests.labels(**values)._value.get() == 0
    assert metrics.duration.labels(**values)._sum.get() == 0
    assert metrics.request_bytes.labels(**values)._sum.get() == 30
    assert metrics.response_bytes.labels(**values)._sum.get() == 60
