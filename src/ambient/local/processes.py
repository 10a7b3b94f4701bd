"""``ambient up`` (the default process model): the control plane and every ztunnel as processes.

What runs::

    ambient up DIR                       (this process: the control API, the pods' runtime)
     ├─ ambient controlplane --config DIR --api-socket ... --track-health
     │     CA on 127.1.0.254:15012, node joins :15013, xDS :15010 (mutual TLS),
     │     watches DIR, takes apply/delete/label and pod readiness on its socket
     ├─ ambient ztunnel --node node-1 --node-ip 127.1.0.1 --control-plane 127.1.0.254:15012
     ├─ ambient ztunnel --node node-2 ...  (one per node, joined with a one-time token)
     └─ the pods' processes (as in the single-process model)

Each child is a "system pod" of the same ``Supervisor`` the pods use: its own process
group, killed with the parent (``PR_SET_PDEATHSIG``), restarted with back-off if it
exits, logs in ``STATE/logs/ambient-system_<name>_<name>.log``.

This process plays kubelet (and, for configuration, the API server's client side):
it follows the control plane's pod schedule with a long poll, starts a node's
ztunnel the first time a pod is scheduled there (minting a join token and joining it
first), starts a pod once its ztunnel listens for it, and reports readiness back. The
``ambient`` commands talk to this process, which forwards configuration changes to
the control plane and reads each ztunnel's own view from its admin port
(``/config_dump`` on ``<node IP>:15000``), so ``ambient zc`` shows what that ztunnel
process holds, not what the control plane meant to send.

Faults: when the control plane is down the ztunnels keep forwarding with their last
configuration and certificates and the pods keep running; this process keeps polling,
and when the control plane is back (restarted by the supervisor, with the changes made
by ``ambient apply/delete/label`` replayed from its journal) it reports every pod's
readiness again. A ztunnel that dies is restarted and re-syncs over xDS.

With ``netns=True`` (``ambient up --netns``) this process is also the node agent
(``ambient.nodeagent``, root): it makes the namespaces, links and rules and runs the
pods inside their namespaces, and each node's ztunnel process serves that node's
pods in-pod, learning their namespaces from the node agent over a Unix socket
(``ambient.nodeagent.podsocket``, passed as ``--node-agent-socket``). The node agent's
DNS and service rules (kube-proxy's part) need the mesh's view: this process follows
the control plane over xDS for each node, with that node's credentials. A ztunnel
killed and restarted re-opens its in-pod listeners in the namespaces, which outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from ambient.config import ConfigSet
from ambient.config.resources import Container
from ambient.httpclient import http_json, unix_request
from ambient.local.backend import Refused
from ambient.local.cpapi import LONG_POLL
from ambient.local.distributed import (
    JOURNAL_FILE,
    create_token,
    node_ca_root,
    node_credentials_dir,
)
from ambient.local.kubelet import Kubelet, ScheduledRun
from ambient.local.statedir import StateDir
from ambient.local.systempods import SYSTEM_NAMESPACE, system_labels, system_pod_json
from ambient.nodeagent.agent import NodeAgent
from ambient.runtime import PodRun, Supervisor
from ambient.runtime.status import ContainerEvent
from ambient.runtime.wire import pod_run_from_json
from ambient.ztunnel.proxy import ADMIN_PORT, READINESS_PORT

__all__ = ["CONTROL_PLANE_IP", "DistributedMesh"]

log = logging.getLogger("ambient.up")

CONTROL_PLANE_IP = "127.1.0.254"
CA_PORT, JOIN_PORT, XDS_PORT, MONITORING_PORT = 15012, 15013, 15010, 15014
START_TIMEOUT = 60.0  # the control plane and a ztunnel must be ready within this
LISTENER_TIMEOUT = 10.0  # a pod starts anyway after this if its ztunnel has no listener yet


class DistributedMesh:
    """Everything ``ambient up DIR`` runs as separate processes (see the module docstring)."""

    def __init__(
        self,
        config_dir: Path,
        state: StateDir,
        *,
        cert_ttl: float | None = None,
        log_level: str = "info",
        netns: bool = False,
    ) -> None:
        self.config_dir = config_dir.absolute()
        self.agent = NodeAgent(state.root) if netns else None
        self._node_xds: list[Any] = []  # the node agent's xDS clients (ambient.xds.client)
        self._state = state
        self.cert_ttl = cert_ttl
        self.log_level = log_level
        self.cp_state = state.root / "controlplane"
        self.api_socket = state.extra_socket("controlplane")
        self.system = Supervisor(
            state.root, backoff_initial=0.5, backoff_max=10.0, on_event=self._on_system_event
        )
        self.kubelet = Kubelet(
            state.root,
            self.config_dir,
            self._queue_health,
            network=self.agent,
            hide=state.secret_paths(),
        )
        self.nodes: dict[str, str] = {}  # ztunnels started: name -> IP
        self._system_runs: dict[str, tuple[PodRun, float]] = {}  # name -> (run, created)
        self._health: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._boot: str | None = None
        self._reachable = False
        self._sync_lock = asyncio.Lock()

    @property
    def state(self) -> StateDir:
        return self._state

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, _config: ConfigSet) -> None:
        """Start the control plane, then what its first schedule needs (ztunnels, pods).

        (``_config`` is the load the caller validated; the control plane loads the folder
        itself, so that it can reload it.)
        """
        self.state.create()
        await self.kubelet.check_isolation()  # its launcher starts before any gRPC channel
        self.cp_state.mkdir(mode=0o700, exist_ok=True)
        (self.cp_state / JOURNAL_FILE).unlink(missing_ok=True)  # a new `up` starts from DIR
        if self.agent is not None:
            await self.agent.start()
        await self.system.start_pod(self._system_pod("controlplane", self._controlplane_argv()))
        schedule = await self._first_schedule()
        await self._apply(schedule)
        self._tasks = [
            asyncio.ensure_future(self._follow(schedule["generation"])),
            asyncio.ensure_future(self._send_health()),
        ]

    async def close(self) -> None:
        """Pods first (their connections end), then the ztunnels, then the control plane."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.kubelet.close()
        for name in list(self.nodes):
            await self.system.stop_pod(SYSTEM_NAMESPACE, f"ztunnel-{name}")
        await self.system.close()
        for client in self._node_xds:
            await client.close()
        if self.agent is not None:
            await self.agent.close()

    def _system_pod(self, name: str, argv: list[str]) -> PodRun:
        run = PodRun(
            namespace=SYSTEM_NAMESPACE,
            name=name,
            uid=f"{SYSTEM_NAMESPACE}/{name}",
            ip=CONTROL_PLANE_IP,
            containers=(Container(name=name, command=tuple(argv)),),
            node="",
            labels=system_labels(name),
            base_dir=self.state.root,
        )
        self._system_runs[name] = (run, time.time())
        return run

    def _controlplane_argv(self) -> list[str]:
        argv = [
            *_ambient(),
            "controlplane",
            "--config",
            str(self.config_dir),
            "--state-dir",
            str(self.cp_state),
            "--listen",
            f"{CONTROL_PLANE_IP}:{CA_PORT}",
            "--join-listen",
            f"{CONTROL_PLANE_IP}:{JOIN_PORT}",
            "--xds-listen",
            f"{CONTROL_PLANE_IP}:{XDS_PORT}",
            "--monitoring-listen",
            f"{CONTROL_PLANE_IP}:{MONITORING_PORT}",
            "--api-socket",
            str(self.api_socket),
            "--track-health",
            "--log-level",
            self.log_level,
        ]
        if self.cert_ttl is not None:
            argv += ["--workload-cert-ttl", f"{max(1, round(self.cert_ttl))}s"]
        if self.agent is not None:
            argv.append("--netns-addresses")
        return argv

    def _on_system_event(self, event: ContainerEvent) -> None:
        log.info("%s", event)

    # -- following the control plane's schedule -------------------------------------------------

    async def _first_schedule(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                return await self._schedule(-1)
            except OSError as exc:
                status = self.system.pod_status(SYSTEM_NAMESPACE, "controlplane")
                if loop.time() > deadline:
                    raise RuntimeError(
                        f"the control plane did not start within {START_TIMEOUT:g}s ({exc}); "
                        f"see {self.system.log_path(SYSTEM_NAMESPACE, 'controlplane', 'controlplane')}"
                    ) from None
                if status is not None and status.restarts >= 2:
                    raise RuntimeError(
                        "the control plane keeps exiting; see "
                        f"{self.system.log_path(SYSTEM_NAMESPACE, 'controlplane', 'controlplane')}"
                    ) from None
                await asyncio.sleep(0.1)

    async def _schedule(self, after: int) -> dict[str, Any]:
        status, answer = await unix_request(
            str(self.api_socket), "GET", f"/schedule?after={after}", timeout=LONG_POLL + 10
        )
        if status != 200 or not isinstance(answer, dict):
            raise OSError(f"the control plane answered {status}: {answer}")
        if answer.get("boot") != self._boot:
            if self._boot is not None:
                log.info("the control plane restarted; reporting every pod's readiness again")
                self.kubelet.resend()
            self._boot = answer.get("boot")
        self._reachable = True
        return answer

    async def _follow(self, generation: int) -> None:
        delay = 0.2
        while True:
            try:
                schedule = await self._schedule(generation)
            except (OSError, TimeoutError) as exc:
                if self._reachable:
                    log.warning(
                        "control plane unreachable (%s); ztunnels and pods keep running "
                        "with the last configuration",
                        exc,
                    )
                self._reachable = False
                generation = -1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            generation = schedule["generation"]
            try:
                await self._apply(schedule)
            except Exception as exc:  # keep following; report what failed
                log.error("applying the schedule failed: %s: %s", type(exc).__name__, exc)

    async def _apply(self, schedule: dict[str, Any]) -> None:
        async with self._sync_lock:
            wanted: dict[tuple[str, str], ScheduledRun] = {}
            for item in schedule["pods"]:
                run = pod_run_from_json(item["run"])
                wanted[run.key] = ScheduledRun(run, item["workload"], item["workloadType"])
            for name, ip in sorted(schedule["nodes"].items()):
                if name not in self.nodes:
                    await self._start_ztunnel(name, ip)
            await self.kubelet.sync(wanted, self._wait_listeners)

    # -- ztunnels -------------------------------------------------------------------------------

    async def _start_ztunnel(self, node: str, ip: str) -> None:
        from ambient.xds.ca_client import join_node

        node_state = self.state.root / "nodes" / node
        credentials = node_credentials_dir(node_state)
        shutil.rmtree(credentials, ignore_errors=True)  # a new `up` joins afresh
        token = create_token(self.cp_state, node, timedelta(minutes=5))
        roots = node_ca_root(self.cp_state).read_bytes()
        joined = await join_node(f"{CONTROL_PLANE_IP}:{JOIN_PORT}", token, node, roots)
        joined.save(credentials)
        argv = [
            *_ambient(),
            "ztunnel",
            "--node",
            node,
            "--node-ip",
            ip,
            "--control-plane",
            f"{CONTROL_PLANE_IP}:{CA_PORT}",
            "--xds",
            f"{CONTROL_PLANE_IP}:{XDS_PORT}",
            "--state-dir",
            str(node_state),
            "--log-level",
            self.log_level,
        ]
        if self.agent is not None:
            argv += ["--node-agent-socket", str(await self._start_node_agent(node, ip, joined))]
        await self.system.start_pod(self._system_pod(f"ztunnel-{node}", argv))
        self.nodes[node] = ip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not (self._running(f"ztunnel-{node}") and await self._ztunnel_ready(ip)):
            if loop.time() > deadline:
                raise RuntimeError(f"ztunnel {node} was not ready within {START_TIMEOUT:g}s")
            await asyncio.sleep(0.1)
        log.info(
            "ztunnel %s ready on %s (admin :15000, metrics :15020, readiness :15021)", node, ip
        )

    async def _start_node_agent(self, node: str, ip: str, credentials: Any) -> Path:
        """The node's namespace, DNS and service rules, and its ztunnel's socket (--netns)."""
        from ambient.local.nodeclients import node_xds_client
        from ambient.state.proxy import ProxyState

        assert self.agent is not None
        state = ProxyState(node)
        client = node_xds_client(f"{CONTROL_PLANE_IP}:{XDS_PORT}", node, state, credentials)
        self._node_xds.append(client)
        client.start()
        await asyncio.wait_for(client.synced.wait(), START_TIMEOUT)
        await self.agent.add_node(node, ip, state)
        path = self.state.extra_socket(f"nodeagent-{node}")
        await self.agent.serve_ztunnel(node, path)
        return path

    def _running(self, name: str) -> bool:
        status = self.system.pod_status(SYSTEM_NAMESPACE, name)
        return status is not None and status.running

    async def _ztunnel_ready(self, ip: str) -> bool:
        """Whether the ztunnel's ``:15021/healthz/ready`` answers 200 (synced, listening)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, READINESS_PORT), 1)
            writer.write(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 2.0)
            writer.close()
        except (OSError, TimeoutError):
            return False
        return line.startswith(b"HTTP/1.1 200")

    async def _wait_listeners(self, runs: list[PodRun]) -> None:
        """Until each new pod's ztunnel has its listeners (as ``/config_dump`` says): the
        SOCKS5 one, or with ``--netns`` its in-pod ones and redirection if it is enrolled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTENER_TIMEOUT
        waiting = {run.uid: run for run in runs if run.node in self.nodes}
        while waiting and loop.time() < deadline:
            for node in sorted({run.node for run in waiting.values()}):
                try:
                    dump = await http_json(self.nodes[node], ADMIN_PORT, "/config_dump")
                except (OSError, TimeoutError, ValueError):
                    continue
                hbone = {w["uid"] for w in dump.get("workloads", []) if w["protocol"] == "HBONE"}
                for uid, listeners in dump.get("listeners", {}).items():
                    if listeners.get("socks5") or (
                        self.agent is not None and (listeners.get("redirected") or uid not in hbone)
                    ):
                        waiting.pop(uid, None)
            if waiting:
                await asyncio.sleep(0.05)
        for run in waiting.values():
            log.warning("pod %s/%s starts before its ztunnel listens for it", *run.key)

    # -- readiness to the control plane ---------------------------------------------------------

    def _queue_health(self, uid: str, ready: bool) -> None:
        self._health.put_nowait((uid, ready))

    async def _send_health(self) -> None:
        """Send readiness reports in order; one lost while the control plane is down is
        sent again (with all others) when it is back (``Kubelet.resend``)."""
        while True:
            uid, ready = await self._health.get()
            try:
                await unix_request(
                    str(self.api_socket), "POST", "/health", {"uid": uid, "ready": ready}
                )
            except (OSError, TimeoutError) as exc:
                log.debug("readiness of %s not reported: %s", uid, exc)

    # -- the control API (MeshBackend) ------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        cp = self.system.pod_status(SYSTEM_NAMESPACE, "controlplane")
        cp_ready = await self._control_plane_answers()
        components: list[dict[str, Any]] = [
            {
                "name": "controlplane",
                "ready": cp_ready and self._running("controlplane"),
                "detail": (cp.describe() + " " if cp else "")
                + f"{CONTROL_PLANE_IP} ca:{CA_PORT} join:{JOIN_PORT} xds:{XDS_PORT} "
                f"monitoring:{MONITORING_PORT}",
            }
        ]
        for name, ip in sorted(self.nodes.items()):
            process = self.system.pod_status(SYSTEM_NAMESPACE, f"ztunnel-{name}")
            running = process is not None and process.running  # not someone else's on the IP
            components.append(
                {
                    "name": f"ztunnel/{name}",
                    "ready": running and await self._ztunnel_ready(ip),
                    "detail": (process.describe() + " " if process else "")
                    + f"{ip} admin:15000 metrics:15020 ready:15021",
                }
            )
        components += self.kubelet.components()
        isolation = self.kubelet.isolation()
        return {
            "ready": all(c["ready"] for c in components) and len(components) > 1,
            "components": components,
            "pid": os.getpid(),
            "config_dir": str(self.config_dir),
            "mode": "processes" + (" (netns)" if self.agent is not None else ""),
            "isolation": isolation,
            "warnings": [] if isolation["secure"] else [isolation["detail"]],
            "monitoring": f"{CONTROL_PLANE_IP}:{MONITORING_PORT}",
        }

    async def pods(self) -> list[dict[str, Any]]:
        return self.kubelet.describe_pods()

    async def system_pods(self) -> list[dict[str, Any]]:
        out = []
        for name, (run, created) in sorted(self._system_runs.items()):
            status = self.system.pod_status(SYSTEM_NAMESPACE, name)
            running = status is not None and status.running
            node = name.removeprefix("ztunnel-") if name.startswith("ztunnel-") else ""
            ip = self.nodes.get(node)
            if node:
                ready = running and ip is not None and await self._ztunnel_ready(ip)
            else:
                ready = running and await self._control_plane_answers()
            out.append(system_pod_json(run, status, ready=ready, created=created, node=node, ip=ip))
        return out

    async def _control_plane_answers(self) -> bool:
        with contextlib.suppress(OSError, TimeoutError):
            code, _ = await unix_request(
                str(self.api_socket), "GET", "/resources?kind=Namespace", timeout=5
            )
            return bool(code == 200)
        return False

    async def resources(self, kind: str, namespace: str | None) -> list[Any]:
        query = f"/resources?kind={kind}" + (f"&namespace={namespace}" if namespace else "")
        result: list[Any] = await self._forward("GET", query, None)
        return result

    async def manifests(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await self._forward("GET", "/manifests", None)
        return answer

    async def node_list(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "ip": ip,
                "admin": {"admin": [ip, ADMIN_PORT], "readiness": [ip, READINESS_PORT]},
            }
            for name, ip in sorted(self.nodes.items())
        ]

    async def config_dumps(self, node: str | None) -> list[dict[str, Any]]:
        if node is not None and node not in self.nodes:
            raise Refused(f"no node named {node!r}", 404)
        dumps = []
        for name, ip in sorted(self.nodes.items()):
            if node is not None and name != node:
                continue
            try:
                dumps.append(await http_json(ip, ADMIN_PORT, "/config_dump"))
            except (OSError, TimeoutError, ValueError) as exc:
                raise Refused(
                    f"ztunnel {name} ({ip}:{ADMIN_PORT}) did not answer: {exc}", 503
                ) from None
        return dumps

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._forward("POST", "/apply", body)
        return result

    async def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._forward("POST", "/delete", body)
        return result

    async def label(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._forward("POST", "/label", body)
        return result

    async def _forward(self, method: str, target: str, body: Any) -> Any:
        try:
            status, answer = await unix_request(str(self.api_socket), method, target, body)
        except (OSError, TimeoutError) as exc:
            raise Refused(f"the control plane is not reachable: {exc}", 503) from None
        if status >= 400:
            message = answer.get("error", str(answer)) if isinstance(answer, dict) else answer
            raise Refused(str(message), status)
        return answer


def _ambient() -> list[str]:
    """How to run ``ambient`` again: this interpreter, this package (``PYTHONPATH`` inherited)."""
    return [sys.executable, "-m", "ambient"]
