"""``ambient up`` in the foreground: start the mesh, serve the control API, stop on a signal.

Two process models behind the same control API: separate processes for the control
plane and each ztunnel (``processes.DistributedMesh``, the default), or everything in
this process (``mesh.LocalMesh``, ``--single-process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ambient.config import ConfigError
from ambient.local.statedir import MeshNotRunning, StateDir
from ambient.logconfig import setup_logging
from ambient.progress import Reporter, progress

log = logging.getLogger("ambient.up")


def run(
    config_dir: Path,
    state: StateDir,
    log_level: str = "info",
    *,
    single_process: bool = False,
    cert_ttl: float | None = None,
    netns: bool = False,
) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    from ambient.launcher.sandbox import make_undumpable

    make_undumpable()  # pods of an unprivileged mesh share its uid: no ptrace, no /proc/PID/*
    setup_logging(log_level)
    try:
        info = state.read_mesh_file()
    except MeshNotRunning:
        pass
    else:
        print(
            f"error: a mesh is already running for {state.root} (pid {info['pid']}); "
            "stop it first, or use another --state-dir",
            file=sys.stderr,
        )
        return 1
    from ambient.local.mesh import LocalMesh

    try:
        config = LocalMesh.load(config_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"nothing was started: fix the {len(exc.problems)} problem(s) above", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        import uvloop

        return uvloop.run(
            _serve(config_dir, state, config, single_process, cert_ttl, log_level, netns)
        )
    except KeyboardInterrupt:  # pragma: no cover - signal handlers take care of it
        return 130


async def _serve(
    config_dir: Path,
    state: StateDir,
    config: object,
    single_process: bool,
    cert_ttl: float | None,
    log_level: str,
    netns: bool = False,
) -> int:
    from ambient.config import ConfigSet
    from ambient.local.api import ControlApi
    from ambient.local.mesh import LocalMesh
    from ambient.local.processes import DistributedMesh

    assert isinstance(config, ConfigSet)
    mesh: LocalMesh | DistributedMesh
    if single_process:
        mesh = LocalMesh(config_dir, state, cert_ttl=cert_ttl, netns=netns)
    else:  # with --netns this process is also the node agent (ambient.nodeagent)
        mesh = DistributedMesh(
            config_dir, state, cert_ttl=cert_ttl, log_level=log_level, netns=netns
        )
    api = ControlApi(mesh)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    shown = contextlib.ExitStack()  # the terminal's progress display, until pods are ready
    watching: asyncio.Future[None] | None = None
    try:
        reporter = shown.enter_context(progress("starting the control plane and the ztunnels"))
        await mesh.start(config)
        socket_path = await api.start()
        state.write_mesh_file(
            {"pid": os.getpid(), "socket": socket_path, "config_dir": str(mesh.config_dir)}
        )
        pods = len(await mesh.pods())
        log.info(
            "mesh is up (%s): %d pod(s) on %d node(s); state in %s. "
            "Try `ambient status`, `ambient zc workloads`. Ctrl-C stops it.",
            "one process" if single_process else "control plane and ztunnels as processes",
            pods,
            len(mesh.nodes),
            state.root,
        )
        if reporter.live:
            watching = asyncio.ensure_future(_until_pods_ready(mesh, reporter, shown))
        else:
            shown.close()
        await stop.wait()
        log.info("shutting down")
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (
                " — another mesh (or program) holds the mesh's loopback addresses; "
                "only one `ambient up` can run on a host at a time"
            )
        log.error("the mesh failed to start: %s%s", exc, hint)
        code = 1
    except Exception as exc:
        log.error("the mesh failed: %s: %s", type(exc).__name__, exc)
        code = 1
    finally:
        if watching is not None:
            watching.cancel()
        shown.close()
        state.clear_mesh_file()
        await api.close()
        await mesh.close()
        state.remove_private_socket_dir()
    return code


STARTUP_PROGRESS_LIMIT = 120.0
"""Seconds the terminal's progress display waits for every pod to be ready."""


async def _until_pods_ready(mesh: Any, reporter: Reporter, shown: contextlib.ExitStack) -> None:
    """Count ready pods on the progress display (a terminal's only) until all are ready or
    ``STARTUP_PROGRESS_LIMIT`` passes; then the display goes, leaving one line."""
    started = time.monotonic()
    reporter.step("pods ready")
    try:
        while True:
            status = await mesh.status()
            pods = [c for c in status.get("components", []) if c["name"].startswith("pod/")]
            ready = sum(1 for c in pods if c["ready"])
            reporter.count(ready, len(pods))
            elapsed = time.monotonic() - started
            if ready == len(pods):
                reporter.note(f"all {len(pods)} pod(s) ready in {elapsed:.1f} s")
                return
            if elapsed > STARTUP_PROGRESS_LIMIT:
                waiting = ", ".join(c["name"][4:] for c in pods if not c["ready"])
                reporter.note(
                    f"{ready}/{len(pods)} pod(s) ready after {elapsed:.0f} s; not ready: "
                    f"{waiting} (see `ambient status`)"
                )
                return
            await asyncio.sleep(0.2)
    finally:
        shown.close()
