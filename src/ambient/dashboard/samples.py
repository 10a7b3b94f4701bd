"""The dashboard's own metrics: each mesh proxy scraped, and the increase of its series.

The dashboard needs no Prometheus: it scrapes the targets the control plane's monitoring
port lists (``/prometheus/sd``, the same list ``ambient prometheus-config`` hands
Prometheus) and keeps the last scrapes of each target for the time window it shows.
Only the series the graph uses are kept (``WANTED``).

Increases follow Prometheus's ``increase()`` without its extrapolation: the value at
the newest scrape less the value at the oldest scrape of the window; a value that went
down is a counter reset (the process restarted), counted from zero; a series that is not
in the older scrape of a target that was scraped then is new since, counted from zero
(a proxy creates a series at its first observation). A target scraped once has no
increase yet.
"""

from __future__ import annotations

import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["WANTED", "Increase", "Scrape", "SeriesKey", "TargetHistory", "parse", "scrape"]

WANTED = frozenset(
    {
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_tcp_connections_opened_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    }
)

SeriesKey = tuple[str, frozenset[tuple[str, str]]]
"""A sample's name and its labels."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_MAX_BODY = 64 * 1024 * 1024


def parse(text: str, wanted: frozenset[str] = WANTED) -> dict[SeriesKey, float]:
    """The samples of ``text`` (Prometheus's text format) whose name is in ``wanted``.

    Raises ``ValueError`` for text that is not the exposition format."""
    values: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                values[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return values


def scrape(url: str, timeout: float = 5.0) -> dict[SeriesKey, float]:
    """GET ``url`` (never through a proxy of the environment) and parse what it answers.

    Raises ``OSError`` when it does not answer, ``ValueError`` when the answer is not
    metrics."""
    with _NO_PROXY.open(url, timeout=timeout) as answer:
        body = answer.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        raise ValueError(f"{url} answered more than {_MAX_BODY} bytes")
    return parse(body.decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float  # time.monotonic() of the scrape
    values: Mapping[SeriesKey, float]


@dataclass(frozen=True, slots=True)
class Increase:
    """How much each series of one target grew over ``seconds``."""

    labels: Mapping[str, str]  # the target's own labels (namespace, pod, app, ...)
    seconds: float
    values: Mapping[SeriesKey, float]


@dataclass
class TargetHistory:
    """The recent scrapes of one target (``labels``: its discovery labels)."""

    labels: dict[str, str]
    scrapes: deque[Scrape] = field(default_factory=deque)

    def add(
        self, values: Mapping[SeriesKey, float], window: float, at: float | None = None
    ) -> None:
        """Record a scrape; scrapes older than the window are dropped, but the newest one
        at or before the window's start is kept as its baseline."""
        now = time.monotonic() if at is None else at
        self.scrapes.append(Scrape(now, values))
        while len(self.scrapes) > 2 and self.scrapes[1].at <= now - window:
            self.scrapes.popleft()

    def increase(self) -> Increase | None:
        """The growth between the oldest and the newest scrape kept (None: fewer than two)."""
        if len(self.scrapes) < 2:
            return None
        old, new = self.scrapes[0], self.scrapes[-1]
        grown: dict[SeriesKey, float] = {}
        for key, value in new.values.items():
            before = old.values.get(key, 0.0)
            delta = value - before if value >= before else value
            if delta > 0:
                grown[key] = delta
        return Increase(self.labels, new.at - old.at, grown)


def increases(histories: Iterable[TargetHistory]) -> list[Increase]:
    """The increase of every target that has one."""
    return [i for h in histories if (i := h.increase()) is not None]
