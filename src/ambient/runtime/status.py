"""Container states, status snapshots, events and the restart back-off policy.

Back-off (``restartPolicy: Always``, the only policy the Pod type has): after
the n-th consecutive exit the container waits ``initial * 2**(n-1)`` seconds,
capped at ``maximum``; a container that ran for ``reset_after`` seconds
before exiting starts again from ``initial``. Supervisor defaults are 1 s
doubling to 30 s, reset after 60 s (2 x maximum, the ratio kubelet uses for its
10 s .. 5 min CrashLoopBackOff reset after 10 min). Kubernetes is slow on
purpose, to protect a shared cluster from thousands of crash loops; locally a
developer watches one mesh start, and pods often crash only because a peer
they depend on is not listening yet, so recovering within seconds matters more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "BackOff",
    "ContainerEvent",
    "ContainerState",
    "ContainerStatus",
    "EventHandler",
    "EventKind",
    "PodRunStatus",
]


class ContainerState(StrEnum):
    """Where a container is in its life."""

    WAITING = "waiting"
    """Not started yet, or between a stop and the next start."""
    RUNNING = "running"
    BACK_OFF = "back-off"
    """Exited; waiting out the back-off delay before the next start."""
    TERMINATED = "terminated"
    """Stopped for good (its pod is being or has been stopped)."""


@dataclass(frozen=True)
class ContainerStatus:
    """A snapshot of one container; ``last_exit_code`` follows the shell (137 = SIGKILL)."""

    name: str
    state: ContainerState
    pid: int | None
    restarts: int
    last_exit_code: int | None
    started_at: datetime | None
    message: str = ""
    """Why the last run ended, when it did ("exited with code 1", "failed to start: ...")."""
    reason: str = ""
    """Why it is waiting, as kubelet says it (``CreateContainerConfigError``), if it is."""

    def describe(self) -> str:
        """One line for errors and the CLI."""
        text = f"{self.name}: {self.state}"
        if self.reason:
            text += f" ({self.reason})"
        if self.pid is not None:
            text += f" (pid {self.pid})"
        extra = [f"restarts {self.restarts}"]
        if self.message:
            extra.append(self.message)
        return f"{text}, {', '.join(extra)}"


@dataclass(frozen=True)
class PodRunStatus:
    """A snapshot of one pod the supervisor runs."""

    namespace: str
    name: str
    uid: str
    ip: str
    containers: tuple[ContainerStatus, ...]

    @property
    def running(self) -> bool:
        """True when every container's process is running."""
        return all(c.state is ContainerState.RUNNING for c in self.containers)

    @property
    def restarts(self) -> int:
        """Restarts of all containers together."""
        return sum(c.restarts for c in self.containers)

    def describe(self) -> str:
        """One line for errors and the CLI."""
        return f"pod {self.namespace}/{self.name}: " + "; ".join(
            c.describe() for c in self.containers
        )


class EventKind(StrEnum):
    """What happened to a container."""

    STARTED = "started"
    EXITED = "exited"
    """The process ended, or could not be started (then ``exit_code`` is 128)."""
    RESTARTING = "restarting"
    """It will start again after ``delay`` seconds."""
    STOPPED = "stopped"
    """The supervisor stopped it for good."""
    NOT_CREATED = "not-created"
    """It was not started: its configuration cannot run here (``message`` says why)."""


@dataclass(frozen=True)
class ContainerEvent:
    """One thing that happened to a container, for logs and the CLI."""

    kind: EventKind
    namespace: str
    pod: str
    container: str
    at: datetime
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    delay: float | None = None
    message: str = ""

    def __str__(self) -> str:
        prefix = f"{self.namespace}/{self.pod} {self.container}"
        if self.kind is EventKind.STARTED:
            return f"{prefix}: started (pid {self.pid}, restarts {self.restarts})"
        if self.kind is EventKind.EXITED:
            return f"{prefix}: {self.message or 'exited'}"
        if self.kind is EventKind.NOT_CREATED:
            return f"{prefix}: not started: {self.message}"
        if self.kind is EventKind.RESTARTING:
            return f"{prefix}: restarting in {self.delay or 0:g}s"
        return f"{prefix}: stopped" + (f" ({self.message})" if self.message else "")


EventHandler = Callable[[ContainerEvent], None]


@dataclass
class BackOff:
    """Delays between restarts: doubling from ``initial`` to ``maximum``, reset after a good run."""

    initial: float
    maximum: float
    reset_after: float
    failures: int = 0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.reset_after < 0:
            raise ValueError(
                f"back-off needs 0 <= initial <= maximum and reset_after >= 0, got "
                f"initial={self.initial}, maximum={self.maximum}, reset_after={self.reset_after}"
            )

    def next_delay(self, ran_for: float) -> float:
        """The delay before restarting a container that exited after ``ran_for`` seconds."""
        if ran_for >= self.reset_after:
            self.failures = 0
        delay = min(self.initial * float(2 ** min(self.failures, 64)), self.maximum)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget earlier failures (the container's spec changed)."""
        self.failures = 0
