"""Processes are started by the pod launcher, never forked from a process that runs gRPC.

The regression: with a gRPC stream busy in the same process (as the ``--netns``
node agent's xDS client is), a container forked by the runtime died now and then
before it could exec (SIGSEGV or SIGABRT from gRPC's atfork handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from ambient.config.resources import Container
from ambient.launcher.client import Launcher
from ambient.runtime import EventKind, Supervisor
from tests.component.runtime.harness import TIMEOUT, Events, pid_alive, pod, py, wait_until

SPAWNS = 150
"""Containers started while gRPC runs (without the launcher ~5% of them died: ~7 here)."""


async def _stream(request_iterator: object, context: object) -> AsyncIterator[bytes]:
    while True:
        yield b"x" * 16
        await asyncio.sleep(0.001)


async def _busy_grpc() -> tuple[grpc.aio.Server, grpc.aio.Channel, asyncio.Task[None]]:
    """A server and a client streaming to each other in this process."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "t.T", {"S": grpc.stream_stream_rpc_method_handler(_stream)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    call = channel.stream_stream("/t.T/S")()

    async def drain() -> None:
        async for _ in call:
            pass

    task = asyncio.ensure_future(drain())
    return server, channel, task


def test_no_container_dies_at_start_while_grpc_runs(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[int]:
        server, channel, task = await _busy_grpc()
        events = Events()
        try:
            async with Supervisor(
                tmp_path / "state", backoff_initial=0.0, backoff_max=0.0, on_event=events
            ) as supervisor:
                await supervisor.start_pod(pod(tmp_path, Container("c", command=("/bin/true",))))
                exits = await events.wait_for(EventKind.EXITED, count=SPAWNS, timeout=120)
                await supervisor.stop_pod("shop", "web")
        finally:
            task.cancel()
            await channel.close()
            await server.stop(None)
        return [e.exit_code or 0 for e in exits]

    codes = uvloop.run(scenario())
    assert len(codes) >= SPAWNS
    assert [c for c in codes if c != 0] == []


def test_the_launcher_imports_only_the_standard_library() -> None:
    from ambient.launcher import client

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import ambient.launcher.server;"
        "names = {m.split('.')[0] for m in sys.modules};"
        "print(sorted(names - set(sys.stdlib_module_names) - {'ambient', '__main__'}));"
        "print(sorted(m for m in sys.modules if m.startswith('ambient')))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, client._PACKAGE_ROOT],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == str(
        ["ambient", "ambient.launcher", "ambient.launcher.sandbox", "ambient.launcher.server",
         "ambient.launcher.wire"]
    )  # fmt: skip


async def test_a_dead_launcher_takes_its_containers_and_is_replaced(
    tmp_path: Path, events: Events
) -> None:
    launcher = Launcher()
    async with Supervisor(
        tmp_path / "state", backoff_initial=0.05, on_event=events, launcher=launcher
    ) as supervisor:
        await supervisor.start_pod(pod(tmp_path, py("app", "import time; time.sleep(1000)")))
        first = (await supervisor.wait_running("shop", "web", TIMEOUT)).containers[0].pid
        assert first is not None and launcher.pid is not None
        old = launcher.pid
        os.kill(old, signal.SIGKILL)
        exited = await events.wait_for(EventKind.EXITED)
        assert exited[0].exit_code == 137  # the kernel killed it with the launcher
        await wait_until(lambda: not pid_alive(first), "the container died with the launcher")
        again = await events.wait_for(EventKind.STARTED, count=2)
        assert again[1].pid != first and launcher.pid not in (None, old)
    await launcher.close()


async def test_exec_failures_name_the_step(tmp_path: Path, events: Events) -> None:
    launcher = Launcher()
    try:
        await launcher.start()
        with pytest.raises(OSError, match=r"workdir: No such file or directory"):
            await launcher.spawn(
                {"argv": ["/bin/true"], "env": {}, "cwd": str(tmp_path / "missing")},
                tmp_path / "log",
            )
        with pytest.raises(OSError, match=r"exec: No such file or directory"):
            await launcher.spawn(
                {"argv": ["/nonexistent"], "env": {}, "cwd": str(tmp_path)}, tmp_path / "log"
            )
        ok = await launcher.spawn(
            {"argv": ["sh", "-c", "exit 3"], "env": {"PATH": os.defpath}, "cwd": str(tmp_path)},
            tmp_path / "log",
        )
        assert await ok.wait() == 3
    finally:
        with contextlib.suppress(Exception):
            await launcher.close()
