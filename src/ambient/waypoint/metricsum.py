"""One waypoint's metrics across its worker processes: the sum of each worker's exposition.

Envoy presents one proxy however many workers it runs (each worker's thread-local
stats are merged into the server's store before ``/stats/prometheus`` is served), so a
waypoint with worker processes answers its ``:15020/metrics`` with one series per
label set, the sum over the workers. Every waypoint metric is a counter or a
histogram (``proxy.metrics``), for which the sum is the whole proxy's value; a gauge
is summed too (a count of live things spread over workers) and an ``info`` or
``stateset`` sample keeps the first worker's value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["sum_expositions"]

_SUMMED = {"counter", "gauge", "histogram", "summary", "gaugehistogram", "untyped", "unknown"}


class _Merged:
    """A collector yielding the already merged families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def sum_expositions(texts: Sequence[bytes]) -> bytes:
    """The Prometheus text exposition of ``texts`` (each one worker's) with equal series
    summed; families and series keep the order in which they first appear."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in series:
                    series[key] = sample.value
                    merged.samples.append(sample)
                elif merged.type in _SUMMED:
                    series[key] += sample.value
    for name, merged in families.items():
        series = values[name]
        merged.samples = [
            Sample(s.name, s.labels, series[(s.name, tuple(sorted(s.labels.items())))])
            for s in merged.samples
        ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)
