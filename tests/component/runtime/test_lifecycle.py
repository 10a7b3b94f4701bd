"""Restarts with back-off, status, logs and the errors a caller sees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ambient.config.resources import Container
from ambient.runtime import ContainerState, EventKind, PodSpecError, Supervisor
from tests.component.runtime.harness import SLEEPER, Events, never_starts, pid_alive, pod, py


async def test_crash_loop_backs_off_and_counts_restarts(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    await supervisor.start_pod(pod(tmp_path, py("app", "raise SystemExit(3)")))
    restarting = await events.wait_for(EventKind.RESTARTING, count=4)
    assert [e.delay for e in restarting[:4]] == [0.05, 0.1, 0.2, 0.2]
    assert all(e.message == "exited with code 3" for e in restarting)
    started = await events.wait_for(EventKind.STARTED, count=4)
    assert [e.restarts for e in started[:4]] == [0, 1, 2, 3]
    assert len({e.pid for e in started}) == len(started)

    (status,) = supervisor.status()
    (app,) = status.containers
    assert app.restarts >= 3
    assert app.last_exit_code == 3
    assert app.started_at is not None


async def test_clean_exit_restarts_too(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    await supervisor.start_pod(pod(tmp_path, Container("app", command=("true",))))
    exited = await events.wait_for(EventKind.EXITED, count=2)
    assert [e.exit_code for e in exited[:2]] == [0, 0]
    assert events.of(EventKind.RESTARTING)[0].delay == 0.05


async def test_a_long_run_resets_the_back_off(tmp_path: Path, events: Events) -> None:
    async with Supervisor(
        tmp_path / "state",
        backoff_initial=0.05,
        backoff_max=0.4,
        backoff_reset=0.1,
        on_event=events,
    ) as supervisor:
        await supervisor.start_pod(pod(tmp_path, py("app", "import time; time.sleep(0.15)")))
        restarting = await events.wait_for(EventKind.RESTARTING, count=3)
    assert [e.delay for e in restarting[:3]] == [0.05, 0.05, 0.05]


async def test_leftovers_of_a_crashed_container_die_with_it(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    code = "import subprocess, sys\nchild = subprocess.Popen(['sleep', '1000'])\nprint(child.pid)\nsys.exit(1)"
    await supervisor.start_pod(pod(tmp_path, py("app", code)))
    await events.wait_for(EventKind.EXITED)
    log = supervisor.log_path("shop", "web", "app").read_text()
    grandchild = int(log.splitlines()[1])
    assert not pid_alive(grandchild)


async def test_logs_collect_stdout_stderr_and_restarts(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    code = "import sys\nprint('to stdout', flush=True)\nprint('to stderr', file=sys.stderr)\nsys.exit(1)"
    await supervisor.start_pod(pod(tmp_path, py("app", code)))
    await events.wait_for(EventKind.EXITED, count=2)
    path = tmp_path / "state" / "logs" / "shop_web_app.log"
    assert supervisor.log_path("shop", "web", "app") == path
    lines = path.read_text().splitlines()
    assert lines[0].startswith("--- ") and lines[0].endswith(" ---")
    assert " ambient: starting " in lines[0]
    assert lines[1:4] == ["to stdout", "to stderr", lines[3]]
    assert "ambient: exited with code 1 ---" in lines[3]
    assert "(restart 1) ---" in lines[4]


async def test_exec_failure_is_a_crash_with_a_reason(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    await supervisor.start_pod(pod(tmp_path, never_starts(tmp_path)))
    (exited,) = await events.wait_for(EventKind.EXITED)
    assert exited.exit_code == 128
    assert exited.message.startswith("failed to start: ")
    await events.wait_for(EventKind.RESTARTING)
    with pytest.raises(
        TimeoutError, match=r"not running after 0.3s: pod shop/web: app: .*failed to start"
    ):
        await supervisor.wait_running("shop", "web", 0.3)


async def test_wait_running_and_status(supervisor: Supervisor, tmp_path: Path) -> None:
    await supervisor.start_pod(pod(tmp_path, py("a", SLEEPER), py("b", SLEEPER)))
    status = await supervisor.wait_running("shop", "web", 10)
    assert status.running
    assert [c.name for c in status.containers] == ["a", "b"]
    assert all(c.state is ContainerState.RUNNING and c.pid for c in status.containers)
    assert supervisor.pod_status("shop", "web") == status
    assert supervisor.pod_status("shop", "nope") is None


async def test_spec_errors_start_nothing(supervisor: Supervisor, tmp_path: Path) -> None:
    good = py("good", SLEEPER)
    with pytest.raises(PodSpecError, match="pod shop/web, container 'bad': no command"):
        await supervisor.start_pod(pod(tmp_path, good, Container("bad", image="nginx")))
    with pytest.raises(PodSpecError, match="pod shop/web: no containers"):
        await supervisor.start_pod(pod(tmp_path))
    with pytest.raises(PodSpecError, match="duplicate container name"):
        await supervisor.start_pod(pod(tmp_path, good, good))
    assert supervisor.status() == []
    assert not (tmp_path / "state" / "logs").exists()


async def test_caller_errors(supervisor: Supervisor, tmp_path: Path) -> None:
    await supervisor.start_pod(pod(tmp_path, py("app", SLEEPER)))
    with pytest.raises(ValueError, match="already running; use update_pod"):
        await supervisor.start_pod(pod(tmp_path, py("app", SLEEPER)))
    with pytest.raises(LookupError, match="pod shop/other is not running here"):
        await supervisor.wait_running("shop", "other", 1)
    assert await supervisor.stop_pod("shop", "other") is False
    with pytest.raises(ValueError, match="back-off needs"):
        Supervisor(tmp_path, backoff_initial=5, backoff_max=1)
    with pytest.raises(ValueError, match="grace_period"):
        Supervisor(tmp_path, grace_period=-1)


async def test_a_failing_event_handler_does_not_stop_the_runtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("handler bug")

    async with Supervisor(tmp_path / "state", on_event=broken) as supervisor:
        await supervisor.start_pod(pod(tmp_path, py("app", SLEEPER)))
        await supervisor.wait_running("shop", "web", 10)
    assert "on_event handler failed" in caplog.text


async def test_waiters_see_a_stop(supervisor: Supervisor, tmp_path: Path) -> None:
    await supervisor.start_pod(pod(tmp_path, never_starts(tmp_path)))
    waiter = asyncio.ensure_future(supervisor.wait_running("shop", "web", 10))
    await asyncio.sleep(0)
    assert await supervisor.stop_pod("shop", "web")
    with pytest.raises(LookupError):
        await waiter
