"""Fault rolls: percentages honoured statistically, independent delay and abort."""

from __future__ import annotations

import random

import pytest

from ambient.waypoint.resilience.fault import FaultPolicy, FaultRoll

N = 20_000


@pytest.mark.parametrize("percent", [0.0, 0.1, 10.0, 50.0, 100.0])
def test_abort_percentage_within_tolerance(percent: float) -> None:
    policy = FaultPolicy(abort_status=503, abort_percent=percent)
    rng = random.Random(42)
    aborted = sum(policy.roll(rng).aborts for _ in range(N))
    expected = N * percent / 100
    # 5 standard deviations of a binomial, at least 3 requests of slack
    slack = max(3.0, 5 * (N * percent / 100 * (1 - percent / 100)) ** 0.5)
    assert abs(aborted - expected) <= slack, (aborted, expected)


def test_delay_and_abort_are_drawn_independently() -> None:
    policy = FaultPolicy(delay=0.5, delay_percent=50, abort_status=418, abort_percent=50)
    rng = random.Random(7)
    rolls = [policy.roll(rng) for _ in range(N)]
    both = sum(1 for r in rolls if r.delay and r.aborts)
    assert abs(both - N / 4) < 5 * (N * 0.25 * 0.75) ** 0.5
    assert {r.delay for r in rolls} == {0.0, 0.5}
    assert {r.abort_status for r in rolls} == {None, 418}


def test_no_percentage_affects_nothing() -> None:
    policy = FaultPolicy(delay=1.0, abort_status=500)  # percentages default to 0 (Istio)
    rng = random.Random(0)
    assert all(policy.roll(rng) == FaultRoll() for _ in range(1000))


def test_grpc_abort() -> None:
    roll = FaultPolicy(abort_grpc=14, abort_percent=100).roll(random.Random(0))
    assert roll.aborts and roll.abort_grpc == 14 and roll.abort_status is None
