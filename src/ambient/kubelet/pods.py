"""The pods of one node: watched, run as processes, reported, deleted — a kubelet's pod workers.

``NodePods`` list-watches the pods bound to its node (``fieldSelector
spec.nodeName=<node>``) and gives each pod a worker that serialises what happens to
it:

1. **Start**: an address from the node's ``podCIDR`` (``addresses.PodCidr``; a
   host-network pod has the node's), its network (the address on the node's
   interface, or with ``--netns`` its namespace), a first status (``Pending``,
   ``podIP``, ``PodReadyToStartContainers``) so the control plane knows it, the
   caller's ``before_start`` (credentials, waiting for the node's ztunnel to listen
   for it), then its containers as processes (``runtime.Supervisor``). A container
   that cannot start as specified stays waiting with ``CreateContainerError`` (or
   ``CreateContainerConfigError``) and its message, and the start is tried again
   with back-off.
2. **Running**: the runtime's events and the probes (``probes.ContainerProbes``)
   update each ``ContainerRecord``; every change marks the status to write
   (``statuswriter.StatusWriter``). Crashed containers restart with back-off (1 s
   doubling to 60 s, forgotten after 10 minutes of running: the decay of
   Kubernetes' ``ReduceDefaultCrashLoopBackOffDecay``), ``CrashLoopBackOff``
   meanwhile. A liveness or startup failure kills the container (SIGTERM, SIGKILL
   after the grace period) and it restarts the same way.
3. **Deletion**: a pod with a ``deletionTimestamp`` is stopped (SIGTERM, SIGKILL
   after its ``deletionGracePeriodSeconds``), its last status written (containers
   terminated, not ready), then deleted with grace period 0 and a precondition on
   its uid; its address and network are released. A pod deleted outright (already
   gone) is stopped the same way.

Labels and annotations reach a container at its next start (fieldRef variables), as
in Kubernetes; nothing of a pod is stored on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import POD, KindInfo
from ambient.kube.reflector import Reflector
from ambient.kubelet.addresses import PodCidr
from ambient.kubelet.podspec import KubeContainer, KubePod, parse_pod
from ambient.kubelet.podstatus import (
    ContainerRecord,
    container_record,
    image_id,
    pod_status,
    timestamp,
)
from ambient.kubelet.probes import ContainerProbes, Dialer, ProbeCallbacks
from ambient.kubelet.statuswriter import StatusWriter
from ambient.launcher.client import Launcher
from ambient.runtime import ContainerEvent, EventKind, PodRun, PodSpecError, Supervisor
from ambient.runtime.process import kill_group_now, spawn
from ambient.runtime.security import (
    ContainerConfigError,
    Isolation,
    effective_security_context,
)
from ambient.ztunnel.httpconnect import HTTP_CONNECT_PORT
from ambient.ztunnel.listeners import SOCKS_PORT

__all__ = ["NodePods", "PodNetwork", "RunningPod"]

log = logging.getLogger("ambient.kubelet")

BACKOFF = (1.0, 60.0, 600.0)  # initial, maximum, reset after a run this long
RETRY = (2.0, 60.0)  # a start that failed (CreateContainerError) is tried again


class PodNetwork(Protocol):
    """Where pods' addresses live: the host's interfaces, or network namespaces."""

    proxies: bool
    """Whether pods reach the mesh through their ztunnel's proxies (no capture)."""

    async def add_pod(self, pod: KubePod, ip: str) -> str | None:
        """Give the pod its address; the network namespace it runs in (None: the host's)."""
        ...

    async def remove_pod(self, pod: KubePod, ip: str) -> None: ...

    def dialer(self, pod: KubePod, ip: str) -> Dialer:
        """Connections from where the pod's traffic starts (for probes)."""
        ...


@dataclass
class RunningPod:
    """A pod this node runs, with what it knows of each container."""

    pod: KubePod
    ip: str
    netns: str | None
    start_time: str
    records: dict[str, ContainerRecord]
    run: PodRun | None = None
    probes: dict[str, ContainerProbes] = field(default_factory=dict)
    network_ready: bool = False
    failures: int = 0


class NodePods:
    """The pods of ``node`` (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        node: str,
        *,
        host_ip: str,
        cidr: PodCidr,
        network: Callable[[KubePod], PodNetwork],
        state_root: Path,
        base_dir: Path,
        before_start: Callable[[KubePod, str], Awaitable[None]] | None = None,
        extra_env: Callable[[KubePod], Mapping[str, str]] | None = None,
        no_proxy: Callable[[KubePod], bool] | None = None,
        system: Callable[[KubePod], bool] | None = None,
        hide: tuple[Path, ...] = (),
        launcher: Launcher | None = None,
    ) -> None:
        """``system``: pods that are the mesh's own components (the node's ztunnel), run
        as the mesh itself; every other pod is isolated as the folder mode's pods are
        (``ambient.runtime.security``: its ``securityContext`` user, 65534 by default
        under a root ``ambient up``) and never sees ``state_root`` nor ``hide`` (the
        mesh's private socket folder). ``launcher``: the pod launcher to share (by
        default the node starts its own)."""
        self.client = client
        self.node = node
        self.host_ip = host_ip
        self.cidr = cidr
        self.network = network
        self.base_dir = base_dir
        self.before_start = before_start
        self.extra_env = extra_env
        self.no_proxy = no_proxy
        self.system = system
        self.supervisor = Supervisor(
            state_root,
            backoff_initial=BACKOFF[0],
            backoff_max=BACKOFF[1],
            backoff_reset=BACKOFF[2],
            on_event=self._on_event,
            launcher=launcher,
            isolation=Isolation.of(state_root, *hide),
        )
        """The pods' runtime: each container as its user, the mesh's folders hidden."""
        self.system_supervisor = Supervisor(
            state_root,
            backoff_initial=BACKOFF[0],
            backoff_max=BACKOFF[1],
            backoff_reset=BACKOFF[2],
            on_event=self._on_event,
            launcher=self.supervisor.launcher,
        )
        """The ``system`` pods' runtime: as the mesh itself."""
        self.status = StatusWriter(client, self._compute)
        self.pods: dict[tuple[str, str], RunningPod] = {}
        self._wanted: dict[tuple[str, str], KubePod] = {}
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        self._reflector = Reflector(
            client, KindInfo("Pod", "", "v1", "pods"), self, field_selector=f"spec.nodeName={node}"
        )
        self._watch: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Future[None]] = set()
        self.on_change: list[Callable[[], None]] = []
        """Called after every step of a pod's worker (the redirection annotations)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch this node's pods (returns once the first list is in)."""
        self.status.start()
        self._watch = asyncio.ensure_future(self._reflector.run())
        await self._reflector.synced.wait()

    async def close(self) -> None:
        """Stop every pod (their status written as stopped); the objects stay."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        running = list(self.pods.values())
        await asyncio.gather(*(self._stop(r) for r in running), return_exceptions=True)
        for r in running:
            await self.status.flush(r.pod.key, timeout=5.0)
        await self.status.close()
        await self.system_supervisor.close()
        await self.supervisor.close()
        for r in running:
            if not r.pod.host_network:
                with contextlib.suppress(Exception):
                    await self.network(r.pod).remove_pod(r.pod, r.ip)

    # -- the watch (Reflector's sink) ------------------------------------------------------

    def replace(self, _info: KindInfo, items: list[dict[str, Any]]) -> None:
        pods = {p.key: p for p in (parse_pod(i) for i in items)}
        for key in list(self._wanted):
            if key not in pods:
                self._set(key, None)
        for key, pod in pods.items():
            self._set(key, pod)

    def event(self, _info: KindInfo, kind: str, obj: dict[str, Any]) -> None:
        pod = parse_pod(obj)
        self._set(pod.key, None if kind == "DELETED" else pod)

    def _set(self, key: tuple[str, str], pod: KubePod | None) -> None:
        if pod is None:
            self._wanted.pop(key, None)
        else:
            self._wanted[key] = pod
            running = self.pods.get(key)
            if running is not None and running.pod.uid == pod.uid:
                running.pod = pod  # the latest conditions (readiness gates), labels
        self._wake.setdefault(key, asyncio.Event()).set()
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = asyncio.ensure_future(self._work(key))

    # -- a pod's worker --------------------------------------------------------------------

    async def _work(self, key: tuple[str, str]) -> None:
        wake = self._wake.setdefault(key, asyncio.Event())
        try:
            while True:
                wake.clear()
                try:
                    done = await self._sync(key)
                except Exception:
                    log.exception("pod %s/%s: sync failed", *key)
                    done = False
                    await asyncio.sleep(RETRY[0])
                for listener in self.on_change:
                    listener()
                if done and not wake.is_set():
                    return
                await wake.wait()
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]

    async def _sync(self, key: tuple[str, str]) -> bool:
        """One step towards what the API server wants; True when nothing is left to do."""
        wanted = self._wanted.get(key)
        running = self.pods.get(key)
        if running is not None and (
            wanted is None or wanted.uid != running.pod.uid or wanted.deleting
        ):
            await self._terminate(
                running, delete=wanted is not None and wanted.uid == running.pod.uid
            )
            return wanted is None
        if wanted is None:
            return True
        if wanted.deleting:  # never started here (or stopped already): just let it go
            await self._delete(wanted)
            return True
        if wanted.status.get("phase") in ("Succeeded", "Failed"):
            return True
        if running is None:
            await self._start(wanted)
        elif running.run is None:
            await self._launch(running)
        else:
            await self._update(running, wanted)
        return True

    async def _start(self, pod: KubePod) -> None:
        ip = self.host_ip if pod.host_network else self.cidr.allocate(pod.uid, pod.pod_ip)
        netns = None if pod.host_network else await self.network(pod).add_pod(pod, ip)
        records = {c.name: container_record(pod, c) for c in pod.containers}
        start_time = str(pod.status.get("startTime") or timestamp())
        running = RunningPod(pod, ip, netns, start_time, records, network_ready=True)
        self.pods[pod.key] = running
        log.info("pod %s/%s: address %s on node %s", pod.namespace, pod.name, ip, self.node)
        await self.status.flush(pod.key)
        if self.before_start is not None:
            await self.before_start(pod, ip)
        await self._launch(running)

    def runtime(self, pod: KubePod) -> Supervisor:
        """The supervisor that runs ``pod``: the mesh's own for ``system`` pods."""
        if self.system is not None and self.system(pod):
            return self.system_supervisor
        return self.supervisor

    def _pod_run(self, running: RunningPod) -> PodRun:
        pod, ip = running.pod, running.ip
        proxied = self.network(pod).proxies and not pod.host_network
        if self.no_proxy is not None and self.no_proxy(pod):
            proxied = False
        env = {"HOST_IP": self.host_ip, **(self.extra_env(pod) if self.extra_env else {})}
        return PodRun(
            namespace=pod.namespace,
            name=pod.name,
            uid=pod.uid,
            ip=ip,
            containers=tuple(c.spec for c in pod.containers),
            node=self.node,
            service_account=pod.service_account,
            labels=pod.labels,
            annotations=pod.annotations,
            proxy=f"socks5h://{ip}:{SOCKS_PORT}" if proxied else None,
            connect_proxy=f"http://{ip}:{HTTP_CONNECT_PORT}" if proxied else None,
            extra_env=env,
            base_dir=self.base_dir,
            host_ip=self.host_ip,
            netns=running.netns,
            security_context=pod.security_context,
        )

    async def _launch(self, running: RunningPod) -> None:
        """Start the containers, or record why they cannot start (and retry later)."""
        pod = running.pod
        problem = self._check(running)
        if problem is None:
            run = self._pod_run(running)
            if self.runtime(pod) is self.supervisor:
                for c in pod.containers:
                    if effective_security_context(run, c.spec).privileged:
                        log.warning(
                            "pod %s/%s container %s is privileged: it runs as the mesh itself "
                            "and can read its keys",
                            pod.namespace,
                            pod.name,
                            c.name,
                        )
            try:
                await self.runtime(pod).start_pod(run)
            except PodSpecError as err:
                problem = (err.container, "CreateContainerError", str(err))
            else:
                running.run = run
                running.failures = 0
                for c in pod.containers:
                    running.records[c.name].image_id = image_id(run, c.spec)
                log.info("pod %s/%s started on %s", pod.namespace, pod.name, self.node)
        if problem is not None:
            name, reason, message = problem
            for c in pod.containers:
                if name is None or c.name == name:
                    running.records[c.name].on_error(reason, message)
            log.warning("pod %s/%s: %s: %s", pod.namespace, pod.name, reason, message)
            delay = min(RETRY[0] * 2**running.failures, RETRY[1])
            running.failures += 1
            self._retry_later(pod.key, delay)
        self.status.mark(pod.key)

    def _check(self, running: RunningPod) -> tuple[str | None, str, str] | None:
        pod = running.pod
        for c in pod.containers:
            if c.config_error:
                return (c.name, "CreateContainerConfigError", c.config_error)
        for c in pod.containers:
            if not c.spec.command and not c.spec.args:
                return (
                    c.name,
                    "CreateContainerError",
                    f"container {c.name!r} has no command: the image {c.image!r} is recorded, "
                    "not pulled, so it has no entrypoint here; give command (and args)",
                )
        return None

    def _retry_later(self, key: tuple[str, str], delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: self._wake.setdefault(key, asyncio.Event()).set())

    async def _update(self, running: RunningPod, pod: KubePod) -> None:
        changed = not running.pod.same_run(pod)
        running.pod = pod
        if changed and running.run is not None:
            run = self._pod_run(running)
            with contextlib.suppress(PodSpecError):
                await self.runtime(pod).update_pod(run)
                running.run = run
        self.status.mark(pod.key)

    async def _stop(self, running: RunningPod) -> None:
        for probes in running.probes.values():
            await probes.stop()
        running.probes.clear()
        pod = running.pod
        await self.runtime(pod).stop_pod(pod.namespace, pod.name, grace=pod.stop_grace())
        running.run = None

    async def _terminate(self, running: RunningPod, *, delete: bool) -> None:
        pod = running.pod
        log.info("pod %s/%s: stopping (grace %gs)", pod.namespace, pod.name, pod.stop_grace())
        await self._stop(running)
        if delete:
            await self.status.flush(pod.key)
            await self._delete(pod)
        self.status.forget(pod.key)
        del self.pods[pod.key]
        if not pod.host_network:
            await self.network(pod).remove_pod(pod, running.ip)
            self.cidr.release(pod.uid)
        log.info("pod %s/%s: stopped", pod.namespace, pod.name)

    async def _delete(self, pod: KubePod) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": pod.uid},
        }
        try:
            await self.client.delete(POD.path(pod.namespace, pod.name), body)
        except KubeError as err:
            if err.code not in (404, 409):
                raise

    # -- what the runtime and the probes say -----------------------------------------------

    def _on_event(self, event: ContainerEvent) -> None:
        log.info("%s", event)
        running = self.pods.get((event.namespace, event.pod))
        if running is None:
            return
        record = running.records.get(event.container)
        if record is None:
            return
        if event.kind is EventKind.STARTED:
            record.on_started(event.at, record.base_restarts + event.restarts)
            self._probe(running, event.container)
        elif event.kind is EventKind.EXITED:
            self._unprobe(running, event.container)
            record.on_exited(
                event.at, event.exit_code or 0, event.message, started=event.pid is not None
            )
        elif event.kind is EventKind.NOT_CREATED:
            reason, _, message = event.message.partition(": ")
            record.on_error(reason, message)
        elif event.kind is EventKind.RESTARTING and record.reason.startswith("CreateContainer"):
            pass  # not created: it waits with its reason, not in a crash loop
        elif event.kind is EventKind.RESTARTING:
            record.on_backoff(
                event.delay or 0.0, f"{running.pod.name}_{running.pod.namespace}({running.pod.uid})"
            )
        elif event.kind is EventKind.STOPPED:
            self._unprobe(running, event.container)
            record.on_stopped()
        self.status.mark(running.pod.key)

    def _probe(self, running: RunningPod, name: str) -> None:
        self._unprobe(running, name)
        container = next((c for c in running.pod.containers if c.name == name), None)
        if container is None:
            return
        record = running.records[name]
        key = running.pod.key

        def ready(value: bool) -> None:
            if running.probes.get(name) is probes and record.ready != value:
                record.ready = value
                self.status.mark(key)

        def started(value: bool) -> None:
            if running.probes.get(name) is probes and record.started != value:
                record.started = value
                self.status.mark(key)

        def restart(reason: str) -> None:
            if running.probes.get(name) is probes:
                log.warning("%s/%s %s: %s: restarting it", *key, name, reason)
                self._kill(running, name)

        probes = ContainerProbes(
            f"{key[0]}/{key[1]}/{name}",
            container,
            running.ip,
            self.network(running.pod).dialer(running.pod, running.ip),
            lambda command, timeout: self._exec(running, container, command, timeout),
            ProbeCallbacks(ready, started, restart),
        )
        running.probes[name] = probes
        probes.start()

    def _unprobe(self, running: RunningPod, name: str) -> None:
        probes = running.probes.pop(name, None)
        if probes is not None:
            task = asyncio.ensure_future(probes.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _kill(self, running: RunningPod, name: str) -> None:
        status = self.runtime(running.pod).pod_status(running.pod.namespace, running.pod.name)
        pid = next((c.pid for c in status.containers if c.name == name), None) if status else None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)

        def force() -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

        asyncio.get_running_loop().call_later(running.pod.grace_period, force)

    async def _exec(
        self,
        running: RunningPod,
        container: KubeContainer,
        command: tuple[str, ...],
        timeout: float,
    ) -> int:
        """An exec probe: ``command`` as the container runs (its user, environment,
        folder, network namespace and hidden folders), started by the pod launcher."""
        run = running.run or self._pod_run(running)
        runtime = self.runtime(running.pod)
        try:
            launch = await runtime.plan(run, container.spec)
        except (PodSpecError, ContainerConfigError):
            return -1
        try:
            process = await spawn(
                runtime.launcher, dataclasses.replace(launch, argv=command), Path(os.devnull)
            )
        except OSError:
            return -1
        try:
            async with asyncio.timeout(timeout):
                return await process.wait()
        except TimeoutError:
            kill_group_now(process.pid)
            await process.wait()
            return -1

    def _compute(self, key: tuple[str, str]) -> tuple[str, dict[str, Any]] | None:
        running = self.pods.get(key)
        if running is None:
            return None
        pod = running.pod
        records = [running.records[c.name] for c in pod.containers]
        status = pod_status(
            pod,
            records,
            ip=running.ip,
            host_ip=self.host_ip,
            start_time=running.start_time,
            network_ready=running.network_ready,
        )
        return pod.uid, status

    # -- what exec and the CLI ask ---------------------------------------------------------

    def current(self) -> dict[tuple[str, str], KubePod]:
        """The pods running here, as last read."""
        return {key: r.pod for key, r in self.pods.items()}

    def describe(self, namespace: str, name: str) -> dict[str, Any] | None:
        """What ``ambient exec`` needs to run a command as this pod."""
        running = self.pods.get((namespace, name))
        if running is None or not running.pod.containers:
            return None
        run = running.run or self._pod_run(running)
        runtime = self.runtime(running.pod)
        env, cwd, error = {}, str(self.base_dir), ""
        try:
            host = runtime.launcher.host
            launch = runtime.plan_with(host, run, running.pod.containers[0].spec)
            env, cwd = dict(launch.env), str(launch.cwd)
        except (PodSpecError, ContainerConfigError, RuntimeError) as err:
            error = str(err)
        return {
            "namespace": namespace,
            "name": name,
            "uid": running.pod.uid,
            "node": self.node,
            "ip": running.ip,
            "env": env,
            "cwd": cwd,
            "netns": running.netns,
            "error": error,
        }
