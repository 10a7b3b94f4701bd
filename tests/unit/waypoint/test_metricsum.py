"""One proxy's metrics from several workers' expositions (``waypoint.metricsum``)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ambient.waypoint.metricsum import sum_expositions
from ambient.waypoint.proxy.metrics import WaypointMetrics


def _labels(metric: object, **values: str) -> dict[str, str]:
    names = metric._labelnames  # type: ignore[attr-defined]
    return {name: values.get(name, "x") for name in names}


def _worker(ok: int, denied: int, durations: list[float]) -> bytes:
    metrics = WaypointMetrics()
    if ok:
        metrics.requests.labels(**_labels(metrics.requests, response_code="200")).inc(ok)
    if denied:
        metrics.requests.labels(**_labels(metrics.requests, response_code="403")).inc(denied)
    for ms in durations:
        metrics.duration.labels(**_labels(metrics.duration)).observe(ms)
    return generate_latest(metrics.registry)


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_one_worker_is_unchanged() -> None:
    text = _worker(3, 1, [0.7, 30.0])
    assert sum_expositions([text]) == text


def test_equal_series_are_summed_and_others_kept() -> None:
    first, second = _worker(3, 0, [0.7]), _worker(2, 4, [0.7, 3000.0])
    merged = _samples(sum_expositions([first, second]))
    a, b = _samples(first), _samples(second)
    assert set(merged) == set(a) | set(b)
    for key, value in merged.items():
        assert value == a.get(key, 0.0) + b.get(key, 0.0), key
    ok = [v for (n, labels), v in merged.items()
          if n == "istio_requests_total" and ("response_code", "200") in labels]  # fmt: skip
    assert ok == [5.0]
    count = [v for (n, _), v in merged.items() if n == "istio_request_duration_milliseconds_count"]
    assert count == [3.0]
