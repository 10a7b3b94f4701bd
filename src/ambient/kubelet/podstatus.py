"""A pod's status as a kubelet reports it, computed from what its containers did.

``ContainerRecord`` follows one container through the runtime's events (started,
exited, backing off, stopped) and its probes; ``pod_status`` turns the records of a
pod into the ``status`` a kubelet writes through ``/status``:

- ``phase``: ``Pending`` until every container has started once, then ``Running``
  (every container restarts: ``restartPolicy`` is treated as ``Always``);
- ``conditions``: ``PodReadyToStartContainers`` (the pod has its address and
  network), ``Initialized``, ``ContainersReady`` and ``Ready`` (ready containers, and
  every ``readinessGates`` condition True), each keeping its ``lastTransitionTime``
  while its value stays; ``PodScheduled`` is the scheduler's and is not written (a
  strategic merge patch keeps it);
- ``containerStatuses`` as Kubernetes shapes them: ``state`` is ``waiting``
  (``ContainerCreating`` before the first start, ``CrashLoopBackOff`` during a
  restart's back-off, ``CreateContainerError``/``CreateContainerConfigError`` when
  it cannot be started as specified), ``running`` (``startedAt``) or ``terminated``
  (``exitCode``, ``reason`` ``Completed``/``Error``/``StartError``, ``startedAt``,
  ``finishedAt``); ``lastState`` holds the previous termination; ``image`` is the
  spec's (not pulled), ``imageID`` the program that really ran
  (``host://<path>``), ``containerID`` ``ambient://<id>`` (one per run);
- ``podIP``/``podIPs``, ``hostIP``/``hostIPs``, ``startTime``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ambient.config.resources import Container
from ambient.kubelet.podspec import KubeContainer, KubePod
from ambient.runtime import PodRun

__all__ = [
    "ContainerRecord",
    "Terminated",
    "container_record",
    "image_id",
    "pod_status",
    "timestamp",
]

CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def timestamp(at: datetime | None = None) -> str:
    """RFC 3339 in UTC with seconds, as Kubernetes writes ``metav1.Time``."""
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Terminated:
    """One run's end."""

    exit_code: int
    reason: str
    message: str
    started_at: datetime | None
    finished_at: datetime
    container_id: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": timestamp(self.finished_at),
            "containerID": self.container_id,
        }
        if self.started_at is not None:
            out["startedAt"] = timestamp(self.started_at)
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class ContainerRecord:
    """What the kubelet knows of one container (see the module docstring)."""

    name: str
    image: str
    pod_uid: str
    image_id: str = ""
    restarts: int = 0
    state: str = "waiting"  # "waiting", "running" or "terminated"
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: datetime | None = None
    container_id: str = ""
    terminated: Terminated | None = None
    last: Terminated | None = None
    ready: bool = False
    started: bool = False
    ever_started: bool = False
    base_restarts: int = 0
    """Restarts before this kubelet ran it (from the status it found)."""
    runs: int = field(default=0, repr=False)

    def on_started(self, at: datetime, restarts: int) -> None:
        self.runs += 1
        seed = f"{self.pod_uid}/{self.name}/{self.runs}/{at.timestamp()}"
        self.container_id = "ambient://" + hashlib.sha256(seed.encode()).hexdigest()
        self.state, self.reason, self.message = "running", "", ""
        self.started_at, self.restarts = at, restarts
        if self.terminated is not None:
            self.last, self.terminated = self.terminated, None
        self.ready, self.started, self.ever_started = False, False, True

    def on_exited(self, at: datetime, code: int, message: str, *, started: bool) -> None:
        if not started:  # exec failed: the container never ran
            reason, text = "StartError", message
        else:
            reason, text = ("Completed" if code == 0 else "Error"), ""
        self.terminated = Terminated(
            code,
            reason,
            text,
            self.started_at if started else None,
            at,
            self.container_id,
        )
        self.state, self.ready, self.started = "terminated", False, False

    def on_backoff(self, delay: float, pod: str) -> None:
        if self.terminated is not None:
            self.last, self.terminated = self.terminated, None
        self.state, self.reason = "waiting", "CrashLoopBackOff"
        self.message = f"back-off {delay:g}s restarting failed container={self.name} pod={pod}"
        self.ready = self.started = False

    def on_stopped(self) -> None:
        """Stopped for good (the pod is going): terminated with its last run's end."""
        if self.terminated is None and self.last is not None and self.state != "running":
            self.terminated, self.last = self.last, None
        if self.terminated is not None:
            self.state = "terminated"
        self.ready = self.started = False

    def on_error(self, reason: str, message: str) -> None:
        """It cannot be started as specified (``CreateContainerError``...)."""
        self.state, self.reason, self.message = "waiting", reason, message
        self.ready = self.started = False

    def to_json(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.state == "running":
            state = {"running": {"startedAt": timestamp(self.started_at)}}
        elif self.state == "terminated" and self.terminated is not None:
            state = {"terminated": self.terminated.to_json()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "state": state,
            "lastState": {"terminated": self.last.to_json()} if self.last else {},
            "ready": self.ready,
            "restartCount": self.restarts,
            "image": self.image,
            "imageID": self.image_id,
            "started": self.started,
        }
        if self.state == "running" or (self.state == "terminated" and self.container_id):
            out["containerID"] = self.container_id
        return out


def _condition(
    kind: str,
    value: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if value else "False"
    before = previous.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    # None removes a field in a strategic merge patch: a reason of the False state must
    # not linger once the condition is True.
    return {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or now,
        "reason": reason if reason and not value else None,
        "message": message if message and not value else None,
    }


def pod_status(
    pod: KubePod,
    records: Sequence[ContainerRecord],
    *,
    ip: str,
    host_ip: str,
    start_time: str,
    network_ready: bool,
    now: str | None = None,
) -> dict[str, Any]:
    """The ``status`` to write for ``pod`` (see the module docstring)."""
    now = now or timestamp()
    previous = {
        str(c.get("type")): c
        for c in pod.status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type")
    }
    initialized = pod.init_containers == 0
    waiting_ones = [r.name for r in records if not r.ready]
    containers_ready = initialized and bool(records) and not waiting_ones
    gates_open = [g for g in pod.readiness_gates if previous.get(g, {}).get("status") != "True"]
    started_all = bool(records) and all(r.ever_started for r in records)
    phase = "Running" if started_all and initialized else "Pending"
    not_ready = f"containers with unready status: [{' '.join(waiting_ones)}]"
    ready_message = not_ready if waiting_ones else ""
    if gates_open and not ready_message:
        ready_message = (
            f"corresponding condition of pod readiness gate {gates_open[0]!r} is not True"
        )
    conditions = [
        _condition("PodReadyToStartContainers", network_ready, previous, now),
        _condition(
            "Initialized",
            initialized,
            previous,
            now,
            "InitContainersNotSupported",
            "init containers are not run by this kubelet",
        ),
        _condition(
            "ContainersReady", containers_ready, previous, now, "ContainersNotReady", not_ready
        ),
        _condition(
            "Ready",
            containers_ready and not gates_open,
            previous,
            now,
            "ContainersNotReady" if waiting_ones or not initialized else "ReadinessGatesNotReady",
            ready_message,
        ),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": [r.to_json() for r in records],
        "startTime": start_time,
    }
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return status


def container_record(pod: KubePod, container: KubeContainer) -> ContainerRecord:
    """A container's record, counting on from the restarts its status already shows."""
    record = ContainerRecord(container.name, container.image, pod.uid)
    for status in pod.status.get("containerStatuses") or []:
        if isinstance(status, Mapping) and status.get("name") == container.name:
            before = int(status.get("restartCount") or 0)
            ran = bool(status.get("containerID"))
            record.base_restarts = before + (1 if ran else 0)
    return record


def image_id(run: PodRun, container: Container) -> str:
    """``host://<path>``: the program that runs (there is no image digest: nothing is pulled)."""
    argv0 = (container.command or container.args or ("",))[0]
    if "/" in argv0:
        path = (run.base_dir / (container.working_dir or "") / argv0).resolve()
        return f"host://{path}"
    found = shutil.which(argv0)
    return f"host://{Path(found).resolve()}" if found else ""
