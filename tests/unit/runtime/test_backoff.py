"""The restart back-off policy and status descriptions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ambient.runtime.status import (
    BackOff,
    ContainerEvent,
    ContainerState,
    ContainerStatus,
    EventKind,
    PodRunStatus,
)


def test_doubles_up_to_the_maximum() -> None:
    backoff = BackOff(initial=1.0, maximum=30.0, reset_after=60.0)
    assert [backoff.next_delay(0.1) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_long_enough_run_resets_it() -> None:
    backoff = BackOff(initial=1.0, maximum=30.0, reset_after=60.0)
    assert [backoff.next_delay(5) for _ in range(3)] == [1, 2, 4]
    assert backoff.next_delay(59.9) == 8
    assert backoff.next_delay(60) == 1
    assert backoff.next_delay(1) == 2
    backoff.reset()
    assert backoff.next_delay(1) == 1


def test_many_failures_do_not_overflow() -> None:
    backoff = BackOff(initial=0.5, maximum=10.0, reset_after=20.0)
    for _ in range(2000):
        delay = backoff.next_delay(0)
    assert delay == 10.0


@pytest.mark.parametrize(("initial", "maximum", "reset"), [(-1, 1, 1), (2, 1, 1), (1, 2, -1)])
def test_rejects_nonsense(initial: float, maximum: float, reset: float) -> None:
    with pytest.raises(ValueError, match="back-off needs"):
        BackOff(initial, maximum, reset)


def test_describe() -> None:
    running = ContainerStatus("app", ContainerState.RUNNING, 42, 0, None, None)
    crashing = ContainerStatus(
        "db", ContainerState.BACK_OFF, None, 3, 1, None, message="exited with code 1"
    )
    pod = PodRunStatus("shop", "web", "u", "127.0.0.5", (running, crashing))
    assert not pod.running
    assert pod.restarts == 3
    assert pod.describe() == (
        "pod shop/web: app: running (pid 42), restarts 0; "
        "db: back-off, restarts 3, exited with code 1"
    )


def test_event_lines() -> None:
    def line(kind: EventKind, **fields: object) -> str:
        event = ContainerEvent(kind, "shop", "web", "app", datetime.now(UTC), **fields)  # type: ignore[arg-type]
        return str(event)

    assert line(EventKind.STARTED, pid=7, restarts=2) == "shop/web app: started (pid 7, restarts 2)"
    assert line(EventKind.EXITED, exit_code=1, message="exited with code 1") == (
        "shop/web app: exited with code 1"
    )
    assert line(EventKind.RESTARTING, delay=0.5) == "shop/web app: restarting in 0.5s"
    assert line(EventKind.STOPPED) == "shop/web app: stopped"
    assert line(EventKind.STOPPED, message="supervisor error: x") == (
        "shop/web app: stopped (supervisor error: x)"
    )
