"""One container's life: start, wait, restart with back-off, replace, stop.

A ``ContainerRunner`` owns one asyncio task that loops: plan the launch from
the pod as it is *now* (so label or proxy changes reach the next start), spawn,
wait for the process or a stop request, then back off and go again
(``restartPolicy: Always``: a clean exit restarts too). Stopping sends SIGTERM
to the process group, SIGKILL after the grace period; when a container's main
process ends for any reason, what is left of its group is killed with it, as
when a container's PID namespace goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from ambient.config.resources import Container
from ambient.launcher.client import Launched, Launcher
from ambient.runtime.process import (
    append_note,
    describe_exit,
    exit_code,
    kill_group_now,
    signal_group,
    spawn,
    wait_group_gone,
)
from ambient.runtime.security import ContainerConfigError
from ambient.runtime.spec import ContainerLaunch, PodRun, PodSpecError
from ambient.runtime.status import (
    BackOff,
    ContainerEvent,
    ContainerState,
    ContainerStatus,
    EventKind,
)

__all__ = ["ContainerRunner"]

logger = logging.getLogger(__name__)

START_FAILED_EXIT_CODE = 128
"""Exit code recorded when exec itself fails (kubelet's StartError uses 128 too)."""
REAP_TIMEOUT = 5.0
"""How long to wait for a SIGKILLed group to disappear before warning."""


class ContainerRunner:
    """Runs one container of a pod until stopped; ``notify`` hears every change."""

    def __init__(
        self,
        pod: PodRun,
        spec: Container,
        *,
        log_path: Path,
        backoff: BackOff,
        grace_period: float,
        notify: Callable[[ContainerEvent | None], None],
        launcher: Launcher,
        plan: Callable[[PodRun, Container], Awaitable[ContainerLaunch]],
    ) -> None:
        """``plan`` makes each start's launch (``Supervisor.plan``): it may raise
        PodSpecError (a start failure) or ContainerConfigError (not started at all)."""
        self.pod = pod
        """The pod as last updated; read at every start."""
        self.spec = spec
        self.log_path = log_path
        self._backoff = backoff
        self._grace = grace_period
        self._notify = notify
        self._launcher = launcher
        self._plan = plan
        self._reason = ""
        self._state = ContainerState.WAITING
        self._pid: int | None = None
        self._restarts = 0
        self._started = False
        self._last_exit_code: int | None = None
        self._started_at: datetime | None = None
        self._message = ""
        self._stopping = asyncio.Event()
        self._replaced = asyncio.Event()
        self._terminate = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def status(self) -> ContainerStatus:
        """A snapshot of this container."""
        return ContainerStatus(
            name=self.spec.name,
            state=self._state,
            pid=self._pid,
            restarts=self._restarts,
            last_exit_code=self._last_exit_code,
            started_at=self._started_at,
            message=self._message,
            reason=self._reason,
        )

    def start(self) -> None:
        """Begin running (returns at once; the process starts in the background)."""
        if self._task is None:
            name = f"container {self.pod.namespace}/{self.pod.name}/{self.spec.name}"
            self._task = asyncio.create_task(self._run(), name=name)

    def replace(self, spec: Container) -> None:
        """Run ``spec`` from now on: stop the current process and start the new one at once."""
        self.spec = spec
        self._replaced.set()
        if self._state is not ContainerState.TERMINATED:
            self._state = ContainerState.WAITING
        self._terminate.set()
        self._wake.set()
        self._notify(None)

    async def stop(self, grace: float | None = None) -> None:
        """Stop for good: SIGTERM, SIGKILL after the grace period (``grace`` if given);
        returns once the group is gone."""
        if grace is not None:
            self._grace = max(0.0, grace)
        self._stopping.set()
        self._terminate.set()
        self._wake.set()
        if self._task is not None:
            # Shielded: a caller that gives up waiting must not abandon the cleanup.
            await asyncio.shield(self._task)

    def kill_now(self) -> None:
        """SIGKILL the current process group without waiting (last resort)."""
        self._stopping.set()
        if self._pid is not None:
            kill_group_now(self._pid)

    # --- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        error = ""
        try:
            while not self._stopping.is_set():
                self._terminate.clear()
                self._wake.clear()
                self._replaced.clear()
                began = loop.time()
                await self._run_once()
                if self._stopping.is_set():
                    break
                if self._replaced.is_set():
                    self._backoff.reset()
                    continue
                delay = self._backoff.next_delay(loop.time() - began)
                if not self._reason:  # a config error stays Waiting with its reason
                    self._state = ContainerState.BACK_OFF
                self._emit(
                    EventKind.RESTARTING,
                    delay=delay,
                    exit_code=self._last_exit_code,
                    message=self._message,
                )
                await self._sleep(delay)
                if self._replaced.is_set():
                    self._backoff.reset()
        except Exception as exc:
            logger.exception("container %s/%s %s: runner failed", *self._names())
            error = self._message = f"supervisor error: {exc}"
        finally:
            self._state = ContainerState.TERMINATED
            self._pid = None
            self._emit(EventKind.STOPPED, message=error)

    async def _run_once(self) -> None:
        self._state = ContainerState.WAITING
        launch: ContainerLaunch | PodSpecError
        try:
            launch = await self._plan(self.pod, self.spec)
        except ContainerConfigError as exc:
            self._not_created(exc.reason, str(exc))
            return
        except PodSpecError as exc:
            launch = exc
        self._reason = ""
        if self._started:  # counts start attempts, not configuration errors (as kubelet)
            self._restarts += 1
        self._started = True
        try:
            if isinstance(launch, PodSpecError):
                raise launch
            restart = f" (restart {self._restarts})" if self._restarts else ""
            command = shlex.join(launch.argv).replace("\n", "\\n")  # one line per note
            append_note(self.log_path, f"starting {command}{restart}")
            process = await spawn(self._launcher, launch, self.log_path)
        except (PodSpecError, OSError) as exc:
            self._exited(None, START_FAILED_EXIT_CODE, f"failed to start: {exc}")
            return
        pid = process.pid
        self._pid = pid
        self._started_at = datetime.now(UTC)
        self._message = ""
        self._state = ContainerState.RUNNING
        self._emit(EventKind.STARTED, pid=pid)
        returncode = await self._wait(process)
        self._exited(pid, exit_code(returncode), describe_exit(returncode))

    async def _wait(self, process: Launched) -> int:
        """Wait for the process or a stop request; leave no member of its group alive."""
        pgid = process.pid
        waiter = asyncio.ensure_future(process.wait())
        stopper = asyncio.ensure_future(self._terminate.wait())
        try:
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                signal_group(pgid, signal.SIGTERM)
                await asyncio.wait((waiter,), timeout=self._grace)
            # Whatever is left of the group goes with its main process.
            signal_group(pgid, signal.SIGKILL)
            returncode = await waiter
            if not await wait_group_gone(pgid, REAP_TIMEOUT):
                logger.warning(
                    "container %s/%s %s: process group %d survived SIGKILL", *self._names(), pgid
                )
            return returncode
        finally:
            stopper.cancel()
            if not waiter.done():  # we were cancelled: do not leave the group behind
                kill_group_now(pgid)
                waiter.cancel()

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    # --- reporting ----------------------------------------------------------------------------

    def _not_created(self, reason: str, message: str) -> None:
        """Kubelet's Waiting state with a reason: nothing ran, nothing to count."""
        first = self._reason != reason or self._message != message
        self._reason = reason
        self._message = message
        self._pid = None
        if first:
            with contextlib.suppress(OSError):
                append_note(self.log_path, f"{reason}: {message}")
            logger.warning("container %s/%s %s: %s: %s", *self._names(), reason, message)
        self._emit(EventKind.NOT_CREATED, message=f"{reason}: {message}")

    def _exited(self, pid: int | None, code: int, message: str) -> None:
        self._pid = None
        self._last_exit_code = code
        self._message = message
        with contextlib.suppress(OSError):
            append_note(self.log_path, message)
        self._emit(EventKind.EXITED, pid=pid, exit_code=code, message=message)

    def _names(self) -> tuple[str, str, str]:
        return (self.pod.namespace, self.pod.name, self.spec.name)

    def _emit(
        self,
        kind: EventKind,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        delay: float | None = None,
        message: str = "",
    ) -> None:
        namespace, pod, container = self._names()
        event = ContainerEvent(
            kind=kind,
            namespace=namespace,
            pod=pod,
            container=container,
            at=datetime.now(UTC),
            pid=pid,
            exit_code=exit_code,
            restarts=self._restarts,
            delay=delay,
            message=message,
        )
        self._notify(event)
