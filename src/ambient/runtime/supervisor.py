"""The supervisor: runs pods' containers as process groups on this host, like kubelet.

Operations on one pod are serialised (a per-pod lock), different pods proceed
concurrently. ``update_pod`` never restarts a container for metadata: labels,
annotations, proxy, IP or extra env of the pod reach each container at its
next start. Only a container whose own spec changed (command, args, env,
working directory...) is restarted, at once and without back-off; added
containers start, removed ones stop. To replace a pod outright, stop it and
start it again.

Logs: ``<state_dir>/logs/<namespace>_<pod>_<container>.log``, appended to
across restarts, with a timestamped ``--- ... ambient: ... ---`` line from the
supervisor at every start and exit. (Names are DNS labels, so ``_`` cannot be
ambiguous.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ambient.config.resources import Container
from ambient.launcher.client import HostInfo, Launcher
from ambient.runtime.container import ContainerRunner
from ambient.runtime.security import Isolation, run_as
from ambient.runtime.spec import ContainerLaunch, PodRun, PodSpecError, plan_launch
from ambient.runtime.status import (
    BackOff,
    ContainerEvent,
    EventHandler,
    PodRunStatus,
)

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)


@dataclass
class _Pod:
    pod: PodRun
    runners: dict[str, ContainerRunner] = field(default_factory=dict)
    stopping: bool = False

    def status(self) -> PodRunStatus:
        return PodRunStatus(
            namespace=self.pod.namespace,
            name=self.pod.name,
            uid=self.pod.uid,
            ip=self.pod.ip,
            containers=tuple(r.status() for r in self.runners.values()),
        )


class Supervisor:
    """Starts, restarts and stops pods' containers; see the module docs."""

    def __init__(
        self,
        state_dir: Path,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        backoff_reset: float | None = None,
        grace_period: float = 5.0,
        on_event: EventHandler | None = None,
        launcher: Launcher | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        """``backoff_reset`` (default 2 x ``backoff_max``): a run this long forgets past crashes.

        ``launcher``: the pod launcher to start processes with (``ambient.launcher``);
        by default the supervisor starts its own and closes it with itself.

        ``isolation``: this supervisor runs *pods* (the kubelet's): each container as
        its user (``ambient.runtime.security``), with a minimal environment, and the
        folders of ``isolation.hide`` hidden from it. Without it, processes run as the
        mesh itself with its environment (the mesh's own components)."""
        self.state_dir = Path(state_dir)
        self.logs_dir = self.state_dir / "logs"
        self.on_event = on_event
        self._backoff = (
            backoff_initial,
            backoff_max,
            2 * backoff_max if backoff_reset is None else backoff_reset,
        )
        BackOff(*self._backoff)  # check the numbers now rather than at the first crash
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {grace_period}")
        self._grace = grace_period
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._changed = asyncio.Event()
        self._closed = False
        self.launcher = launcher or Launcher()
        self._own_launcher = launcher is None
        self.isolation = isolation

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        """Where a container's stdout and stderr go."""
        return self.logs_dir / f"{namespace}_{pod}_{container}.log"

    # --- lifecycle ----------------------------------------------------------------------------

    async def start_pod(self, pod: PodRun) -> None:
        """Start every container of ``pod`` (returns once they are launched in the background).

        Raises ``PodSpecError`` (nothing started) if a container cannot run as
        specified, ``ValueError`` if the pod is already running.
        """
        async with self._lock(pod.key):
            if pod.key in self._pods:
                raise ValueError(
                    f"pod {pod.namespace}/{pod.name} is already running; use update_pod"
                )
            self._start_locked(pod)

    async def update_pod(self, pod: PodRun) -> None:
        """Apply a new version of a running pod (or start it); see the module docs."""
        async with self._lock(pod.key):
            entry = self._pods.get(pod.key)
            if entry is None:
                self._start_locked(pod)
                return
            _check_containers(pod)
            old = entry.runners
            new = {c.name: c for c in pod.containers}
            for container in pod.containers:
                if container.name not in old or old[container.name].spec != container:
                    self._check(pod, container)
            entry.pod = pod
            removed = [r for name, r in old.items() if name not in new]
            runners: dict[str, ContainerRunner] = {}
            for name, container in new.items():
                runner = old.get(name)
                if runner is None:
                    runner = self._runner(pod, container)
                    runner.start()
                else:
                    runner.pod = pod
                    if runner.spec != container:
                        runner.replace(container)
                runners[name] = runner
            entry.runners = runners
            self._notify(None)
            await asyncio.gather(*(r.stop() for r in removed))

    async def stop_pod(self, namespace: str, name: str, *, grace: float | None = None) -> bool:
        """Stop a pod's containers (SIGTERM, then SIGKILL after ``grace`` seconds, the
        supervisor's grace period if None); False if it was not running."""
        key = (namespace, name)
        async with self._lock(key):
            entry = self._pods.get(key)
            if entry is None:
                return False
            entry.stopping = True
            try:
                await asyncio.gather(*(r.stop(grace) for r in entry.runners.values()))
            finally:
                del self._pods[key]
                self._notify(None)
            return True

    async def host(self) -> HostInfo:
        """What the launcher can do on this host (starts it if needed)."""
        return await self.launcher.start()

    async def plan(self, pod: PodRun, container: Container) -> ContainerLaunch:
        """The launch of ``container`` now (PodSpecError, ContainerConfigError)."""
        if self.isolation is None:
            return plan_launch(pod, container)
        return self.plan_with(await self.host(), pod, container)

    def plan_with(self, host: HostInfo, pod: PodRun, container: Container) -> ContainerLaunch:
        """:meth:`plan` for a known ``host`` (synchronous; ``ambient exec`` uses it)."""
        if self.isolation is None:
            return plan_launch(pod, container)
        hide = self.isolation.existing() if host.privileged or host.userns else ()
        return plan_launch(pod, container, run_as=run_as(pod, container, host), hide=hide)

    def _check(self, pod: PodRun, container: Container) -> None:
        """What can be checked before anything starts (PodSpecError)."""
        plan_launch(pod, container, hide=self.isolation.hide if self.isolation else ())

    async def close(self) -> None:
        """Stop every pod; no new pod may start afterwards. Safe to call twice."""
        self._closed = True
        while self._pods:
            await asyncio.gather(*(self.stop_pod(ns, name) for ns, name in list(self._pods)))
        if self._own_launcher:
            await self.launcher.close()

    def kill_all(self) -> None:
        """Last resort (no event loop needed): SIGKILL every container now, without waiting."""
        self._closed = True
        for entry in self._pods.values():
            for runner in entry.runners.values():
                runner.kill_now()
        if self._own_launcher:
            self.launcher.kill()

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- introspection ------------------------------------------------------------------------

    def status(self) -> list[PodRunStatus]:
        """A snapshot of every pod, in start order."""
        return [entry.status() for entry in self._pods.values()]

    def pod_status(self, namespace: str, name: str) -> PodRunStatus | None:
        """A snapshot of one pod, or None if it is not running here."""
        entry = self._pods.get((namespace, name))
        return None if entry is None else entry.status()

    async def wait_running(self, namespace: str, name: str, timeout: float) -> PodRunStatus:
        """Wait until every container of the pod is running at once.

        Raises ``TimeoutError`` naming each container's state, or ``LookupError``
        if the pod is not (or no longer) run by this supervisor.
        """
        status: PodRunStatus | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    entry = self._pods.get((namespace, name))
                    if entry is None or entry.stopping:
                        raise LookupError(f"pod {namespace}/{name} is not running here")
                    status = entry.status()
                    if status.running:
                        return status
                    await self._changed.wait()
        except TimeoutError:
            detail = status.describe() if status else f"pod {namespace}/{name}"
            raise TimeoutError(f"not running after {timeout:g}s: {detail}") from None

    # --- internals ----------------------------------------------------------------------------

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _start_locked(self, pod: PodRun) -> None:
        if self._closed:
            raise RuntimeError("the supervisor is closed")
        _check_containers(pod)
        for container in pod.containers:
            self._check(pod, container)
        entry = _Pod(pod, {c.name: self._runner(pod, c) for c in pod.containers})
        self._pods[pod.key] = entry
        for runner in entry.runners.values():
            runner.start()
        self._notify(None)

    def _runner(self, pod: PodRun, container: Container) -> ContainerRunner:
        return ContainerRunner(
            pod,
            container,
            log_path=self.log_path(pod.namespace, pod.name, container.name),
            backoff=BackOff(*self._backoff),
            grace_period=self._grace,
            notify=self._notify,
            launcher=self.launcher,
            plan=self.plan,
        )

    def _notify(self, event: ContainerEvent | None) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        if event is None:
            return
        logger.debug("%s", event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                logger.exception("on_event handler failed for: %s", event)


def _check_containers(pod: PodRun) -> None:
    if not pod.containers:
        raise PodSpecError(pod, None, "no containers")
    seen: set[str] = set()
    for container in pod.containers:
        if container.name in seen:
            raise PodSpecError(pod, container.name, "duplicate container name")
        seen.add(container.name)
