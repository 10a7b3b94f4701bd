"""The kubelet stand-in: runs the pods the control plane schedules, and reports their readiness.

Both process models use it: in one process ``LocalMesh`` feeds it from its
``ControlPlane``; in the default model ``ambient up`` feeds it what the control plane
process reports and sends readiness back to it.

Readiness, as Kubernetes' (simplified): a pod is ready once every container runs
and every declared TCP port accepts a connection; it stops being ready as soon as a
container exits. ``report(uid, ready)`` tells the control plane, which makes the pod
a healthy endpoint or not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ambient.controlplane.expand import scheduled_pods
from ambient.controlplane.plane import ControlPlane
from ambient.controlplane.workloads import pod_uid
from ambient.runtime import PodRun, PodSpecError, Supervisor
from ambient.runtime.security import ContainerConfigError, Isolation, isolation_report
from ambient.runtime.status import ContainerEvent, EventKind
from ambient.ztunnel.httpconnect import HTTP_CONNECT_PORT
from ambient.ztunnel.listeners import SOCKS_PORT

__all__ = ["Kubelet", "ScheduledRun", "scheduled_runs"]

log = logging.getLogger("ambient.up")

PROBE_TIMEOUT = 300.0


@dataclass(frozen=True)
class ScheduledRun:
    """A pod to run and what ``ambient exec deploy/NAME`` matches it by."""

    run: PodRun
    workload: str  # the Deployment's name, or the pod's
    workload_type: str  # "deployment" or "pod"


def scheduled_runs(plane: ControlPlane, config_dir: Path) -> dict[tuple[str, str], ScheduledRun]:
    """The pods ``plane`` schedules that have an address, as the kubelet runs them."""
    snapshot = plane.snapshot
    scheduled, _ = scheduled_pods(plane.config, plane.pod_labels)
    wanted: dict[tuple[str, str], ScheduledRun] = {}
    for entry in scheduled:
        workload = snapshot.workloads.get(pod_uid(entry.pod.meta.namespace, entry.pod.meta.name))
        if workload is None or not workload.addresses:
            continue
        ip = str(workload.addresses[0])
        node_ip = snapshot.nodes.get(workload.node)
        run = PodRun.from_pod(
            entry.pod,
            uid=workload.uid,
            base_dir=config_dir,
            ip=ip,
            proxy=f"socks5h://{ip}:{SOCKS_PORT}",
            connect_proxy=f"http://{ip}:{HTTP_CONNECT_PORT}",
            extra_env={"HOST_IP": str(node_ip)} if node_ip is not None else {},
        )
        wanted[(workload.namespace, workload.name)] = ScheduledRun(
            run, workload.workload_name, workload.workload_type
        )
    return wanted


class PodNetwork(Protocol):
    """Where pods' networking comes from in ``--netns`` mode (``ambient.nodeagent``)."""

    async def add_pod(self, namespace: str, name: str, node: str, ip: str) -> object: ...

    async def remove_pod(self, ip: str) -> None: ...

    def pod_netns(self, namespace: str, name: str) -> str: ...

    async def ports_open(self, ip: str, ports: Iterable[int]) -> bool: ...


class Kubelet:
    """Starts, updates and stops pods to match :meth:`sync`; probes and reports readiness.

    With a ``network`` (``--netns``), each pod gets its network namespace before its
    processes start (and they run inside it), and loses it after they stop.

    Pods never see ``hide`` (the mesh's state folder, its private socket folder, the
    plug-in CA folder): ``ambient.runtime.security`` says how, and as whom they run.
    """

    def __init__(
        self,
        state_root: Path,
        config_dir: Path,
        report: Callable[[str, bool], object],
        network: PodNetwork | None = None,
        hide: tuple[Path, ...] = (),
    ) -> None:
        self.config_dir = config_dir
        self.report = report
        self.network = network
        cacerts = config_dir / "cacerts"  # Istio's plug-in CA files, key included
        self.supervisor = Supervisor(
            state_root,
            on_event=self._on_event,
            isolation=Isolation.of(state_root, *hide, *([cacerts] if cacerts.is_dir() else [])),
        )
        self.pods: dict[tuple[str, str], ScheduledRun] = {}
        self.ready: set[str] = set()  # uids reported ready
        self.created: dict[tuple[str, str], float] = {}  # when each pod was first started
        self._probes: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def sync(
        self,
        wanted: dict[tuple[str, str], ScheduledRun],
        before_start: Callable[[list[PodRun]], Awaitable[None]],
    ) -> None:
        """Make the running pods ``wanted``; ``before_start(new pods)`` runs before they start.

        (It lets the pods' ztunnels open their listeners before the apps start.)
        """
        if self.network is not None:
            network = self.network
            wanted = {
                key: dataclasses.replace(
                    s,
                    run=dataclasses.replace(
                        s.run,
                        proxy=None,
                        connect_proxy=None,
                        netns=network.pod_netns(key[0], key[1]),
                    ),
                )
                for key, s in wanted.items()
            }
        for key in [k for k in self.pods if k not in wanted]:
            await self.supervisor.stop_pod(*key)
            stopped = self.pods.pop(key).run
            self.created.pop(key, None)
            self.ready.discard(stopped.uid)
            if self.network is not None:
                await self.network.remove_pod(stopped.ip)
            log.info("pod %s/%s stopped", *key)
        new = [s.run for key, s in wanted.items() if key not in self.pods]
        for run in new:
            for container in run.containers:
                if container.security_context and container.security_context.privileged:
                    log.warning(
                        "pod %s/%s container %s is privileged: it runs as the mesh itself "
                        "and can read its keys",
                        run.namespace,
                        run.name,
                        container.name,
                    )
        if new and self.network is not None:
            for run in new:
                await self.network.add_pod(run.namespace, run.name, run.node, run.ip)
        if new:
            await before_start(new)
        for key, scheduled in wanted.items():
            previous = self.pods.get(key)
            self.pods[key] = scheduled  # before starting: container events look the pod up
            run = scheduled.run
            if previous is None:
                self.created[key] = time.time()
                await self.supervisor.start_pod(run)
                log.info("pod %s/%s started on %s with IP %s", key[0], key[1], run.node, run.ip)
            elif previous.run != run:
                await self.supervisor.update_pod(run)

    async def check_isolation(self) -> dict[str, Any]:
        """Start the pod launcher and say (in the log, loudly if not) whether pods are
        kept from the mesh's keys here; what ``ambient status`` shows about it."""
        host = await self.supervisor.host()
        secure, detail = isolation_report(host)
        if secure:
            log.info("pod isolation: %s", detail)
        else:
            log.warning("WARNING: %s", detail)
        return {"secure": secure, "detail": detail}

    def isolation(self) -> dict[str, Any]:
        """:meth:`check_isolation`'s answer, once the launcher runs."""
        try:
            host = self.supervisor.launcher.host
        except RuntimeError:
            return {"secure": False, "detail": "the pod launcher is not running"}
        secure, detail = isolation_report(host)
        return {"secure": secure, "detail": detail}

    def resend(self) -> None:
        """Report every pod's readiness again (the control plane restarted)."""
        for scheduled in self.pods.values():
            self.report(scheduled.run.uid, scheduled.run.uid in self.ready)

    async def close(self) -> None:
        for probe in self._probes.values():
            probe.cancel()
        await self.supervisor.close()

    # -- readiness ----------------------------------------------------------------------------

    def _on_event(self, event: ContainerEvent) -> None:
        log.info("%s", event)
        key = (event.namespace, event.pod)
        scheduled = self.pods.get(key)
        probe = self._probes.pop(key, None)
        if probe is not None:
            probe.cancel()
        if scheduled is None:
            return
        if event.kind is EventKind.STARTED:
            self._probes[key] = asyncio.ensure_future(self._probe(scheduled.run))
        else:  # exited, restarting, stopped: no new connections to it from now on
            self._set_ready(scheduled.run.uid, False)

    def _set_ready(self, uid: str, ready: bool) -> None:
        if ready:
            self.ready.add(uid)
        else:
            self.ready.discard(uid)
        self.report(uid, ready)

    async def _probe(self, run: PodRun) -> None:
        ports = [p.container_port for c in run.containers for p in c.ports if p.protocol == "TCP"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT
        while loop.time() < deadline:
            status = self.supervisor.pod_status(run.namespace, run.name)
            if self.network is not None:
                is_open = await self.network.ports_open(run.ip, ports)
            else:
                is_open = await ports_open(run.ip, ports)
            if status is not None and status.running and is_open:
                self._set_ready(run.uid, True)
                return
            await asyncio.sleep(0.05)
        log.warning("pod %s/%s never became ready (ports %s)", run.namespace, run.name, ports)

    # -- introspection ------------------------------------------------------------------------

    def components(self) -> list[dict[str, Any]]:
        """``pod/NS/NAME`` rows of ``ambient status``."""
        rows = []
        for pod in self.supervisor.status():
            scheduled = self.pods.get((pod.namespace, pod.name))
            ready = scheduled is not None and scheduled.run.uid in self.ready
            rows.append(
                {
                    "name": f"pod/{pod.namespace}/{pod.name}",
                    "ready": pod.running and ready,
                    "detail": pod.describe() + ("" if ready else " (not ready)"),
                }
            )
        return rows

    def describe_pods(self) -> list[dict[str, Any]]:
        """Running pods with what ``ambient exec`` needs, and their state for ``ambient get``
        (``containers``: each one's state, restarts, readiness and start time)."""
        result = []
        for (namespace, name), scheduled in sorted(self.pods.items()):
            run = scheduled.run
            launch, error = None, ""
            if run.containers:
                try:
                    host = self.supervisor.launcher.host
                    launch = self.supervisor.plan_with(host, run, run.containers[0])
                except (ContainerConfigError, PodSpecError, RuntimeError) as exc:
                    error = str(exc)
            status = self.supervisor.pod_status(namespace, name)
            ready = run.uid in self.ready
            containers = [
                {
                    "name": c.name,
                    "state": c.state.value,
                    "restarts": c.restarts,
                    "ready": ready and c.state.value == "running",
                    "startedAt": c.started_at.timestamp() if c.started_at else None,
                    "lastExitCode": c.last_exit_code,
                    "message": c.message,
                }
                for c in (status.containers if status is not None else ())
            ]
            result.append(
                {
                    "namespace": namespace,
                    "name": name,
                    "ip": run.ip,
                    "node": run.node,
                    "workload": scheduled.workload,
                    "workload_type": scheduled.workload_type,
                    "env": dict(launch.env) if launch else {},
                    "cwd": str(launch.cwd) if launch else str(self.config_dir),
                    "netns": run.netns,
                    "error": error,
                    "uid": run.uid,
                    "labels": dict(run.labels),
                    "serviceAccount": run.service_account,
                    "hostIP": run.extra_env.get("HOST_IP", run.host_ip),
                    "ready": ready,
                    "created": self.created.get((namespace, name)),
                    "containers": containers,
                }
            )
        return result


async def ports_open(ip: str, ports: list[int], timeout: float = 1.0) -> bool:
    """Whether every port of ``ip`` accepts a TCP connection."""
    for port in ports:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
    return True
