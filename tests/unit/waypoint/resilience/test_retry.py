"""Retry decisions: Envoy's retry_on conditions, Istio's default and HTTPRetry translation."""

from __future__ import annotations

import random

import pytest

from ambient.config.l7fields import parse_retry_on
from ambient.waypoint.resilience.retry import (
    DEFAULT_RETRY,
    Attempt,
    Failure,
    RetryPolicy,
)

UF = Attempt(failure=Failure.CONNECT)
UC = Attempt(failure=Failure.RESET)
TIMEOUT = Attempt(failure=Failure.TIMEOUT)
REFUSED = Attempt(failure=Failure.REFUSED)  # HTTP/2 REFUSED_STREAM


def on(text: str) -> RetryPolicy:
    policy = RetryPolicy.build(2, text)
    assert policy is not None
    return policy


@pytest.mark.parametrize(
    ("retry_on", "attempt", "retried"),
    [
        # Istio's default: connect-failure,refused-stream,unavailable,cancelled,503
        (None, UF, True),
        (None, UC, False),
        (None, TIMEOUT, False),
        (None, Attempt(503), True),
        (None, Attempt(500), False),
        (None, Attempt(502), False),
        (None, Attempt(200, "14"), True),  # grpc unavailable
        (None, Attempt(200, "1"), True),  # grpc cancelled
        (None, Attempt(200, "13"), False),
        ("5xx", Attempt(500), True),
        ("5xx", Attempt(499), False),
        ("5xx", UC, True),
        ("5xx", UF, True),
        ("5xx", TIMEOUT, True),
        ("gateway-error", Attempt(502), True),
        ("gateway-error", Attempt(504), True),
        ("gateway-error", Attempt(500), False),
        ("gateway-error", TIMEOUT, True),
        ("reset", UC, True),
        ("reset", Attempt(503), False),
        ("reset-before-request", UF, True),
        ("reset-before-request", UC, False),
        ("connect-failure", UF, True),
        ("connect-failure", UC, False),
        ("retriable-4xx", Attempt(409), True),
        ("retriable-4xx", Attempt(404), False),
        ("retriable-status-codes,418", Attempt(418), True),
        ("418", Attempt(418), True),  # a bare code implies retriable-status-codes
        ("418", Attempt(503), False),
        ("internal", Attempt(200, "13"), True),
        ("resource-exhausted", Attempt(200, "8"), True),
        ("deadline-exceeded", Attempt(200, "4"), True),
        ("unavailable", Attempt(503), False),
        ("retriable-headers", Attempt(503), False),
        # HTTP/2 upstreams: a refused stream was not processed
        (None, REFUSED, True),
        ("refused-stream", REFUSED, True),
        ("refused-stream", UC, False),
        ("connect-failure", REFUSED, False),
        ("reset", REFUSED, True),
        ("reset-before-request", REFUSED, True),
        ("5xx", REFUSED, True),
        ("gateway-error", REFUSED, True),
        ("unavailable", REFUSED, False),
        # every gRPC condition, on a trailers-only answer's grpc-status, and only its own code
        ("cancelled", Attempt(200, "1"), True),
        ("cancelled", Attempt(200, "4"), False),
        ("deadline-exceeded", Attempt(200, "14"), False),
        ("resource-exhausted", Attempt(200, "13"), False),
        ("unavailable", Attempt(200, "14"), True),
        ("internal", Attempt(200, "14"), False),
        ("unavailable,internal", Attempt(200, "13"), True),
        (
            "cancelled,deadline-exceeded,resource-exhausted,unavailable,internal",
            Attempt(200, "0"),
            False,
        ),  # OK is never retried
        ("unavailable", Attempt(200, ""), False),  # no grpc-status in the head: not trailers-only
        ("5xx", Attempt(200, "14"), False),  # HTTP conditions do not read grpc-status
    ],
)
def test_retriable(retry_on: str | None, attempt: Attempt, retried: bool) -> None:
    policy = DEFAULT_RETRY if retry_on is None else on(retry_on)
    assert policy.retriable(attempt) is retried


def test_istio_default_policy() -> None:
    assert DEFAULT_RETRY.retries == 2
    assert DEFAULT_RETRY.retry_on == {
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    }
    assert DEFAULT_RETRY.status_codes == {503}
    assert DEFAULT_RETRY.other_hosts
    assert DEFAULT_RETRY.per_try_timeout is None


def test_build_follows_istio_translation() -> None:
    assert RetryPolicy.build(0, "5xx") is None  # attempts 0 disables retries
    kept = RetryPolicy.build(5)  # no retryOn: the default conditions stay
    assert kept is not None
    assert kept.retries == 5 and kept.retry_on == DEFAULT_RETRY.retry_on
    custom = RetryPolicy.build(3, "gateway-error, 409,connect-failure", 0.5, 0.1, False)
    assert custom is not None
    assert custom.retry_on == {"gateway-error", "connect-failure", "retriable-status-codes"}
    assert custom.status_codes == {409}
    assert (custom.per_try_timeout, custom.backoff, custom.other_hosts) == (0.5, 0.1, False)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("5xx,bogus", "unknown retry condition 'bogus'"),
        ("999", "'999' is not an HTTP status code"),
        ("5XX", "unknown retry condition '5XX'"),
    ],
)
def test_parse_retry_on_problems(text: str, problem: str) -> None:
    assert any(problem in p for p in parse_retry_on(text)[2])


def test_backoff_is_jittered_exponential_capped_at_ten_times_base() -> None:
    policy = on("5xx")
    rng = random.Random(1)
    for n, ceiling in ((1, 0.025), (2, 0.075), (3, 0.175), (4, 0.25), (9, 0.25)):
        draws = [policy.backoff_delay(n, rng) for _ in range(300)]
        assert all(0 <= d <= ceiling + 1e-12 for d in draws)
        assert max(draws) > ceiling * 0.9  # the whole range is used
