"""Outlier detection bookkeeping with a hand-driven clock."""

from __future__ import annotations

from ambient.config.destinationrule import OutlierPolicy
from ambient.waypoint.resilience.outlier import OutlierDetector
from ambient.waypoint.resilience.retry import Attempt, Failure

OK, E500, E503 = Attempt(200), Attempt(500), Attempt(503)
HOSTS = ["a", "b", "c", "d"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def detector(**policy: int | float) -> tuple[OutlierDetector, Clock]:
    clock = Clock()
    return OutlierDetector(OutlierPolicy(**policy), clock), clock  # type: ignore[arg-type]


def test_consecutive_5xx_ejects_and_success_resets() -> None:
    d, _ = detector(consecutive_5xx=3, max_ejection_percent=100)
    assert not d.record("a", E500, 4)
    assert not d.record("a", E503, 4)
    assert not d.record("a", OK, 4)  # resets the count
    assert not d.record("a", E500, 4)
    assert not d.record("a", E500, 4)
    assert d.record("a", Attempt(failure=Failure.CONNECT), 4)  # connection failure = 503
    assert d.is_ejected("a")
    assert d.select(HOSTS, str) == ["b", "c", "d"]


def test_gateway_errors_only() -> None:
    d, _ = detector(consecutive_5xx=0, consecutive_gateway=2, max_ejection_percent=100)
    assert not d.record("a", E503, 4)
    assert not d.record("a", E500, 4)  # a 500 resets the gateway count
    assert not d.record("a", Attempt(failure=Failure.TIMEOUT), 4)  # timeout = 504
    assert d.record("a", Attempt(502), 4)


def test_ejection_time_grows_with_each_ejection_and_decays() -> None:
    d, clock = detector(consecutive_5xx=1, base_ejection=30, interval=10, max_ejection_percent=100)
    assert d.record("a", E500, 4)
    clock.now += 29.9
    assert d.is_ejected("a")
    clock.now += 0.2
    assert not d.is_ejected("a")
    assert d.record("a", E500, 4)  # second ejection right away: 60 s
    clock.now += 59
    assert d.is_ejected("a")
    clock.now += 2
    assert not d.is_ejected("a")
    clock.now += 100  # ten intervals back in service: the multiplier is back to 0
    assert d.record("a", E500, 4)
    clock.now += 31
    assert not d.is_ejected("a")


def test_max_ejection_percent() -> None:
    d, _ = detector(consecutive_5xx=1, max_ejection_percent=50)
    assert d.record("a", E500, 4)  # 0% ejected before: allowed
    assert d.record("b", E500, 4)  # 25% < 50%: allowed
    assert not d.record("c", E500, 4)  # 50% already: not
    assert d.select(HOSTS, str) == ["c", "d"]


def test_default_max_ejection_percent_allows_one_of_two() -> None:
    d, _ = detector(consecutive_5xx=1)  # 10 %
    assert d.record("a", E500, 2)
    assert not d.record("b", E500, 2)


def test_min_health_percent_panics_to_all_hosts() -> None:
    d, _ = detector(consecutive_5xx=1, max_ejection_percent=100, min_health_percent=60)
    d.record("a", E500, 4)
    assert d.select(HOSTS, str) == ["b", "c", "d"]  # 75% healthy
    d.record("b", E500, 4)
    assert d.select(HOSTS, str) == HOSTS  # 50% < 60%: everything again


def test_all_ejected_without_panic_threshold_leaves_nothing() -> None:
    d, _ = detector(consecutive_5xx=1, max_ejection_percent=100)
    d.record("a", E500, 2)
    d.record("b", E500, 2)
    assert list(d.select(["a", "b"], str)) == []


LOCAL = [Attempt(failure=f) for f in (Failure.CONNECT, Failure.RESET, Failure.TIMEOUT)]


def test_local_origin_split_counts_the_waypoints_failures_apart() -> None:
    d, _ = detector(consecutive_5xx=2, max_ejection_percent=100)
    d.policy = OutlierPolicy(
        consecutive_5xx=2, max_ejection_percent=100, split_local_origin=True,
        consecutive_local_origin=3,
    )  # fmt: skip
    # Local failures do not count as 5xx: two of them plus a 503 is no ejection.
    assert not d.record("a", LOCAL[0], 4)
    assert not d.record("a", LOCAL[1], 4)
    assert not d.record("a", E503, 4)  # an answer: resets the local count, 1 external error
    assert not d.record("a", LOCAL[2], 4)
    assert not d.record("a", LOCAL[0], 4)
    assert d.record("a", LOCAL[1], 4)  # third local failure in a row
    # The application's errors alone eject by consecutive5xxErrors, whatever came between.
    assert not d.record("b", E500, 4)
    assert not d.record("b", LOCAL[0], 4)  # not an external success: the 5xx count stays
    assert d.record("b", E500, 4)


def test_without_split_local_failures_are_5xx() -> None:
    d, _ = detector(consecutive_5xx=3, max_ejection_percent=100)
    assert not d.record("a", LOCAL[0], 4)
    assert not d.record("a", LOCAL[1], 4)
    assert d.record("a", LOCAL[2], 4)


def test_local_origin_failures_default_to_five() -> None:
    d, _ = detector()
    d.policy = OutlierPolicy(consecutive_5xx=0, max_ejection_percent=100, split_local_origin=True,
                             consecutive_local_origin=0)  # fmt: skip
    assert [d.record("a", LOCAL[0], 4) for _ in range(5)] == [False] * 4 + [True]


def test_http_error_codes_replace_5xx() -> None:
    d, _ = detector()
    d.policy = OutlierPolicy(consecutive_5xx=2, max_ejection_percent=100,
                             error_codes=frozenset({429, 503}))  # fmt: skip
    assert not d.record("a", E500, 4)  # not listed: a success
    assert not d.record("a", Attempt(429), 4)
    assert not d.record("a", E500, 4)  # resets
    assert not d.record("a", Attempt(429), 4)
    assert d.record("a", E503, 4)


def test_endpoints_that_left_the_cluster_are_forgotten() -> None:
    """Envoy drops a removed host's outlier state: through rollouts (new addresses each
    time) the record stays as small as the cluster instead of growing for ever."""
    d, clock = detector(consecutive_5xx=1, base_ejection=30, max_ejection_percent=100)
    for rollout in range(100):
        pods = [f"pod-{rollout}-{i}" for i in range(4)]
        for pod in pods:
            d.record(pod, E500, 4)
            clock.now += 31
        assert d.select(pods, str) == pods
        assert len(d._hosts) <= len(pods), f"rollout {rollout}: {len(d._hosts)} hosts kept"
    assert d.record("pod-99-0", E500, 4)  # the state of the current pods is kept
    assert d.select(["pod-99-0", "pod-99-1"], str) == ["pod-99-1"]
