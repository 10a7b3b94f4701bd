"""Scrape history: increases across resets, new series, and the window."""

from __future__ import annotations

import pytest

from ambient.dashboard.samples import TargetHistory, increases, parse

TEXT = """# HELP istio_requests_total Requests
# TYPE istio_requests_total counter
istio_requests_total{reporter="waypoint",response_code="200"} 7.0
# HELP other_total Not wanted
# TYPE other_total counter
other_total 3.0
"""


def test_parse_keeps_only_the_series_the_graph_uses() -> None:
    values = parse(TEXT)
    assert values == {
        (
            "istio_requests_total",
            frozenset({("reporter", "waypoint"), ("response_code", "200")}),
        ): 7.0
    }


def test_parse_refuses_what_is_not_the_exposition_format() -> None:
    with pytest.raises(ValueError):
        parse("<html>not metrics</html>\n")


A = ("istio_requests_total", frozenset({("a", "1")}))
B = ("istio_requests_total", frozenset({("b", "1")}))


def test_increase_over_the_window_counts_resets_and_new_series_from_zero() -> None:
    history = TargetHistory({"pod": "p"})
    history.add({A: 10.0}, window=60, at=100.0)
    assert history.increase() is None  # one scrape: no rate yet
    history.add({A: 3.0, B: 2.0}, window=60, at=110.0)  # A restarted from 0, B is new
    grown = history.increase()
    assert grown is not None
    assert grown.seconds == 10.0
    assert grown.values == {A: 3.0, B: 2.0}
    assert grown.labels == {"pod": "p"}


def test_scrapes_older_than_the_window_are_dropped_but_one_baseline_stays() -> None:
    history = TargetHistory({})
    for i, at in enumerate([0.0, 10.0, 20.0, 30.0]):
        history.add({A: float(i * 10)}, window=15, at=at)
    assert [s.at for s in history.scrapes] == [10.0, 20.0, 30.0]
    [grown] = increases([history])
    assert grown.seconds == 20.0
    assert grown.values == {A: 20.0}


def test_unchanged_series_are_left_out() -> None:
    history = TargetHistory({})
    history.add({A: 5.0}, window=60, at=0.0)
    history.add({A: 5.0}, window=60, at=1.0)
    [grown] = increases([history])
    assert grown.values == {}
