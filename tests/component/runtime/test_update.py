"""update_pod: metadata reaches the next start only; a changed container restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ambient.config.resources import EnvVar
from ambient.runtime import EventKind, PodSpecError, Supervisor
from tests.component.runtime.harness import (
    SLEEPER,
    Events,
    atomic_write,
    pid_alive,
    pod,
    py,
    read_when_written,
)

# Records the version label and proxy it was started with, then stays up.
REPORTER = (
    "import os, time\n"
    + atomic_write("seen", "os.environ['VERSION'] + ' ' + os.environ.get('ALL_PROXY', '-')")
    + "time.sleep(1000)\n"
)
VERSION = (EnvVar("VERSION", field_path="metadata.labels['version']"),)


async def test_metadata_changes_do_not_restart(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    first = pod(tmp_path, py("app", REPORTER, env=VERSION), labels={"version": "v1"})
    await supervisor.start_pod(first)
    before = await supervisor.wait_running("shop", "web", 10)
    assert await read_when_written(tmp_path / "seen") == "v1 -"

    changed = dataclasses.replace(
        first,
        labels={"version": "v2"},
        annotations={"note": "x"},
        proxy="socks5h://127.10.0.5:15080",
        extra_env={"NEW": "1"},
    )
    await supervisor.update_pod(changed)
    after = await supervisor.wait_running("shop", "web", 10)
    assert after.containers[0].pid == before.containers[0].pid
    assert after.containers[0].restarts == 0
    assert len(events.of(EventKind.STARTED)) == 1
    assert (tmp_path / "seen").read_text() == "v1 -"

    # A changed command restarts that container, which now sees the new metadata.
    (tmp_path / "seen").unlink()
    container = dataclasses.replace(changed.containers[0], args=("--changed",))
    await supervisor.update_pod(dataclasses.replace(changed, containers=(container,)))
    restarted = await supervisor.wait_running("shop", "web", 10)
    assert restarted.containers[0].pid != before.containers[0].pid
    assert restarted.containers[0].restarts == 1
    assert not pid_alive(before.containers[0].pid or 0)
    assert await read_when_written(tmp_path / "seen") == "v2 socks5h://127.10.0.5:15080"
    assert not events.of(EventKind.RESTARTING)  # no back-off for a new spec


async def test_containers_added_and_removed(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    first = pod(tmp_path, py("a", SLEEPER), py("b", SLEEPER))
    await supervisor.start_pod(first)
    before = {c.name: c.pid for c in (await supervisor.wait_running("shop", "web", 10)).containers}

    await supervisor.update_pod(
        dataclasses.replace(first, containers=(py("c", SLEEPER), py("a", SLEEPER)))
    )
    after = await supervisor.wait_running("shop", "web", 10)
    assert [c.name for c in after.containers] == ["c", "a"]
    assert after.containers[1].pid == before["a"]
    assert not pid_alive(before["b"] or 0)
    assert [e.container for e in events.of(EventKind.STOPPED)] == ["b"]


async def test_update_checks_the_new_spec_first(supervisor: Supervisor, tmp_path: Path) -> None:
    first = pod(tmp_path, py("app", SLEEPER))
    await supervisor.start_pod(first)
    before = await supervisor.wait_running("shop", "web", 10)
    with pytest.raises(PodSpecError, match="no containers"):
        await supervisor.update_pod(dataclasses.replace(first, containers=()))
    bad = dataclasses.replace(first.containers[0], working_dir="missing")
    with pytest.raises(PodSpecError, match="working directory"):
        await supervisor.update_pod(dataclasses.replace(first, containers=(bad,)))
    assert supervisor.pod_status("shop", "web") == before


async def test_update_starts_an_unknown_pod(supervisor: Supervisor, tmp_path: Path) -> None:
    await supervisor.update_pod(pod(tmp_path, py("app", SLEEPER)))
    await supervisor.wait_running("shop", "web", 10)


async def test_update_of_a_crash_looping_container_starts_it_at_once(
    tmp_path: Path, events: Events
) -> None:
    async with Supervisor(
        tmp_path / "state", backoff_initial=30, backoff_max=30, on_event=events
    ) as supervisor:
        broken = pod(tmp_path, py("app", "raise SystemExit(1)"))
        await supervisor.start_pod(broken)
        await events.wait_for(EventKind.RESTARTING)  # now sleeping 30 s
        fixed = dataclasses.replace(broken, containers=(py("app", SLEEPER),))
        await supervisor.update_pod(fixed)
        status = await supervisor.wait_running("shop", "web", 10)
        assert status.containers[0].restarts == 1
