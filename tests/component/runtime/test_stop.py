"""Stopping leaves nothing behind: no process of the group, no listener, even if we die."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ambient.runtime import EventKind, Supervisor
from tests.component.runtime.harness import (
    SLEEPER,
    TIMEOUT,
    Events,
    atomic_write,
    pid_alive,
    pod,
    py,
    read_when_written,
    wait_until,
)

# The container's main process starts a grandchild and records both pids.
SPAWNER = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '1000'])\n"
    "target = sys.argv[1]\n"
    "open(target + '.tmp', 'w').write(f'{os.getpid()} {child.pid}')\n"
    "os.replace(target + '.tmp', target)\n"
    "time.sleep(1000)\n"
)


async def spawned_pids(path: Path) -> list[int]:
    pids = [int(p) for p in (await read_when_written(path)).split()]
    assert all(pid_alive(p) for p in pids)
    return pids


async def test_stop_kills_the_whole_group(
    supervisor: Supervisor, events: Events, tmp_path: Path
) -> None:
    await supervisor.start_pod(pod(tmp_path, py("app", SPAWNER, "pids")))
    pids = await spawned_pids(tmp_path / "pids")
    assert await supervisor.stop_pod("shop", "web")
    assert not [p for p in pids if pid_alive(p)]
    (exited,) = events.of(EventKind.EXITED)
    assert exited.exit_code == 128 + signal.SIGTERM
    assert events.of(EventKind.STOPPED)
    assert supervisor.status() == []


async def test_sigterm_ignored_means_sigkill_after_the_grace_period(
    tmp_path: Path, events: Events
) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        + atomic_write("ready", "'1'")
        + "time.sleep(1000)\n"
    )
    async with Supervisor(tmp_path / "state", grace_period=0.3, on_event=events) as supervisor:
        await supervisor.start_pod(pod(tmp_path, py("app", code)))
        await read_when_written(tmp_path / "ready")
        began = time.monotonic()
        await supervisor.stop_pod("shop", "web")
        assert time.monotonic() - began >= 0.3
    (exited,) = events.of(EventKind.EXITED)
    assert exited.exit_code == 128 + signal.SIGKILL
    assert exited.message == "killed by SIGKILL (exit code 137)"


async def test_close_leaves_no_process(tmp_path: Path, events: Events) -> None:
    supervisor = Supervisor(tmp_path / "state", grace_period=2.0, on_event=events)
    await supervisor.start_pod(
        pod(tmp_path, py("a", SPAWNER, "a.pids"), py("b", SPAWNER, "b.pids"), name="one")
    )
    await supervisor.start_pod(pod(tmp_path, py("c", SPAWNER, "c.pids"), name="two"))
    pids = [p for n in ("a", "b", "c") for p in await spawned_pids(tmp_path / f"{n}.pids")]
    await supervisor.close()
    assert not [p for p in pids if pid_alive(p)]
    assert supervisor.status() == []
    assert len(events.of(EventKind.STOPPED)) == 3
    await supervisor.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await supervisor.start_pod(pod(tmp_path, py("a", SLEEPER), name="three"))


LISTENER = (
    "import subprocess, sys, time\n"
    "code = "
    + repr(
        "import socket, time\n"
        "s = socket.socket()\n"
        "s.bind(('127.0.0.1', 0))\n"
        "s.listen()\n" + atomic_write("port", "str(s.getsockname()[1])") + "time.sleep(1000)\n"
    )
    + "\n"
    "subprocess.Popen([sys.executable, '-c', code])\n"
    "time.sleep(1000)\n"
)


async def test_no_listener_is_left_behind(supervisor: Supervisor, tmp_path: Path) -> None:
    await supervisor.start_pod(pod(tmp_path, py("app", LISTENER)))
    port = int(await read_when_written(tmp_path / "port"))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()

    await supervisor.stop_pod("shop", "web")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # fails while anyone still listens on it
        probe.listen()


ORPHANED = """
import asyncio, sys
from pathlib import Path
from ambient.config.resources import Container
from ambient.runtime import EventKind, PodRun, Supervisor

def on_event(event):
    if event.kind is EventKind.STARTED:
        print(event.pid, flush=True)

async def main():
    supervisor = Supervisor(Path(sys.argv[1]), on_event=on_event)
    container = Container("app", command=("sleep", "1000"))
    run = PodRun(namespace="d", name="p", uid="u", ip="127.0.0.5", containers=(container,))
    await supervisor.start_pod(run)
    await asyncio.sleep(1000)

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
async def test_containers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ORPHANED, str(tmp_path), stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            container = int(await parent.stdout.readline())
        assert pid_alive(container)
    finally:
        with contextlib.suppress(ProcessLookupError):
            parent.kill()
        await parent.communicate()
    await wait_until(lambda: not pid_alive(container), "container killed with its supervisor")


def test_works_under_uvloop(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[int]:
        async with Supervisor(tmp_path / "state", grace_period=2.0) as supervisor:
            await supervisor.start_pod(pod(tmp_path, py("app", SPAWNER, "pids")))
            await supervisor.wait_running("shop", "web", TIMEOUT)
            return await spawned_pids(tmp_path / "pids")

    pids = uvloop.run(scenario())
    assert not [p for p in pids if pid_alive(p)]
