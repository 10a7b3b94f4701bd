"""``ambient up``: the control plane, a ztunnel per node and the local runtime, in one process.

Startup order matters and is: load and validate every manifest (nothing
starts if any is wrong) → CA → control plane (index, addresses) → one
ztunnel per node, each fed by its own subscription and holding certificates
only for its node's workloads (the control plane's CA refuses others) → the
pods' processes, once their node's ztunnel is listening for them.

Afterwards every configuration change (``apply``, ``delete``, ``label``)
goes through the control plane; the ztunnels follow its pushes and the
runtime follows the pod list, starting, stopping or updating processes.
A label change never restarts a process.

With ``netns=True`` (``ambient up --netns``) the node agent
(``ambient.nodeagent``) gives every node and pod a network namespace, pods'
processes run inside theirs, and ztunnels capture traffic transparently; the
hooks are the lines that mention ``self.agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ambient.api.workload import Workload, WorkloadStatus
from ambient.config import ConfigError, ConfigSet, load_paths
from ambient.config.configset import Origin, Ref
from ambient.config.references import check_references
from ambient.controlplane.allocate import AddressAllocator
from ambient.controlplane.expand import ScheduledPod, scheduled_pods
from ambient.controlplane.index import pod_uid
from ambient.controlplane.plane import ControlPlane, Subscription
from ambient.identity.ca import CertificateAuthority
from ambient.identity.manager import CertificateManager
from ambient.local.statedir import StateDir
from ambient.nodeagent.agent import NodeAgent, netns_allocator
from ambient.runtime import PodRun, Supervisor, plan_launch
from ambient.runtime.status import ContainerEvent, EventKind
from ambient.ztunnel.proxy import SOCKS_PORT, Ztunnel
from ambient.ztunnel.state import ProxyState

log = logging.getLogger("ambient.up")


@dataclass
class Node:
    """One node's ztunnel and what feeds it."""

    name: str
    ip: str
    state: ProxyState
    certificates: CertificateManager
    ztunnel: Ztunnel
    subscription: Subscription
    feeder: asyncio.Task[None]


class LocalMesh:
    """Everything ``ambient up DIR`` runs."""

    def __init__(
        self,
        config_dir: Path,
        state: StateDir,
        *,
        cert_ttl: float | None = None,
        netns: bool = False,
    ) -> None:
        self.config_dir = config_dir.absolute()
        self.netns = netns
        self.agent: NodeAgent | None = None
        self.state = state
        self.cert_ttl = cert_ttl
        self.nodes: dict[str, Node] = {}
        self.plane: ControlPlane | None = None
        self.supervisor: Supervisor | None = None
        self._pods: dict[tuple[str, str], PodRun] = {}
        self._watch: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._probes: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.new_warnings: list[str] = []  # what the last apply added (for the CLI)
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------

    @staticmethod
    def load(config_dir: Path) -> ConfigSet:
        """Load and validate every manifest in ``config_dir``; raises ``ConfigError``."""
        return load_paths([config_dir])

    async def start(self, config: ConfigSet) -> None:
        self.state.create()
        plugin_dir = self.config_dir / "cacerts"
        ca = CertificateAuthority.load_or_create(
            self.state.root, plugin_dir=plugin_dir if plugin_dir.is_dir() else None
        )
        allocator = AddressAllocator.in_state_dir(self.state.root)
        if self.netns:
            allocator = netns_allocator(self.state.root)
            self.agent = NodeAgent(self.state.root)
            await self.agent.start()
        self.plane = ControlPlane(ca, allocator, config=config)
        self.plane.track_health()  # pods become endpoints once their ports accept connections
        for warning in self.plane.snapshot.warnings:
            log.warning("%s", warning)
        self.supervisor = Supervisor(self.state.root, on_event=self._on_container_event)
        await self._sync()
        self._watch = asyncio.ensure_future(self._follow_plane())

    async def close(self) -> None:
        """Stop pods first (their connections end), then ztunnels, then the control plane."""
        for probe in self._probes.values():
            probe.cancel()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.supervisor is not None:
            await self.supervisor.close()
        for node in self.nodes.values():
            node.subscription.close()
            node.feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node.feeder
            await node.ztunnel.close()
            await node.certificates.close()
        self.nodes.clear()
        if self.agent is not None:
            await self.agent.close()
        if self.plane is not None:
            self.plane.close()

    # -- configuration changes ---------------------------------------------------------

    def apply(self, config: ConfigSet) -> list[str]:
        """Add or replace objects; returns ``kind/ns/name configured`` lines."""
        plane = self._plane()
        current = plane.config
        merged = ConfigSet(
            objects={**current.objects, **config.objects},
            origins={**current.origins, **config.origins},
            warnings=config.warnings,
        )
        problems = check_references(merged)
        if problems:
            raise ConfigError(problems)
        before = set(plane.snapshot.warnings)
        plane.update(merged)
        self.new_warnings = [w for w in plane.snapshot.warnings if w not in before]
        for warning in self.new_warnings:
            log.warning("%s", warning)
        return [
            f"{ref.kind.lower()}/{ref.name} {'configured' if ref in current.objects else 'created'}"
            for ref in sorted(config.objects)
        ]

    def delete(self, config: ConfigSet) -> list[str]:
        """Remove the objects named in ``config``; returns ``kind/name deleted`` lines."""
        plane = self._plane()
        current = plane.config
        objects: dict[Ref, Any] = dict(current.objects)
        origins: dict[Ref, Origin] = dict(current.origins)
        lines = []
        for ref in sorted(config.objects):
            if objects.pop(ref, None) is None:
                lines.append(f"{ref.kind.lower()}/{ref.name} not found")
            else:
                origins.pop(ref, None)
                lines.append(f"{ref.kind.lower()}/{ref.name} deleted")
        plane.update(ConfigSet(objects=objects, origins=origins))
        return lines

    def label(self, kind: str, namespace: str, name: str, key: str, value: str | None) -> None:
        self._plane().label(kind, namespace, name, key, value)

    # -- following the control plane ------------------------------------------------------

    async def _follow_plane(self) -> None:
        subscription = self._plane().subscribe(None)
        try:
            async for _delta in subscription:
                try:
                    await self._sync()
                except Exception as exc:  # keep following; report what failed
                    log.error(
                        "applying a configuration change failed: %s: %s", type(exc).__name__, exc
                    )
        finally:
            subscription.close()

    async def _sync(self) -> None:
        async with self._sync_lock:
            await self._sync_nodes()
            await self._sync_pods()

    async def _sync_nodes(self) -> None:
        plane = self._plane()
        for name, ip in sorted(plane.snapshot.nodes.items()):
            if name in self.nodes:
                continue
            state = ProxyState(name)
            issuer = functools.partial(plane.sign_certificate, name)
            certificates = CertificateManager(issuer)
            ztunnel = Ztunnel(name, str(ip), state, certificates, pod_networks=self.agent)
            subscription = plane.subscribe(name)
            first = await anext(subscription)
            state.apply(
                first.upserted, first.removed, first.policies_upserted, first.policies_removed
            )
            if self.agent is not None:
                await self.agent.add_node(name, str(ip), state)
            await ztunnel.start()
            feeder = asyncio.ensure_future(_feed(subscription, state))
            self.nodes[name] = Node(
                name, str(ip), state, certificates, ztunnel, subscription, feeder
            )
            log.info(
                "ztunnel %s ready on %s (admin :15000, metrics :15020, readiness :15021)", name, ip
            )

    async def _sync_pods(self) -> None:
        plane, supervisor = self._plane(), self._supervisor()
        snapshot = plane.snapshot
        scheduled, _ = scheduled_pods(plane.config, plane.pod_labels)
        wanted: dict[tuple[str, str], PodRun] = {}
        for entry in scheduled:
            workload = snapshot.workloads.get(
                pod_uid(entry.pod.meta.namespace, entry.pod.meta.name)
            )
            if workload is None or not workload.addresses:
                continue
            wanted[(workload.namespace, workload.name)] = self._pod_run(entry, workload)
        for key in [k for k in self._pods if k not in wanted]:
            await supervisor.stop_pod(*key)
            if self.agent is not None:
                await self.agent.remove_pod(self._pods[key].ip)
            del self._pods[key]
            log.info("pod %s/%s stopped", *key)
        # Listeners for new pods exist before their apps start: one reconcile per node.
        if self.agent is not None:
            for key, run in wanted.items():
                if key not in self._pods and run.node in self.nodes:
                    await self.agent.add_pod(run.namespace, run.name, run.node, run.ip)
        for node_name in sorted({run.node for key, run in wanted.items() if key not in self._pods}):
            node = self.nodes.get(node_name)
            if node is not None:
                await node.ztunnel.reconcile()
        for key, run in wanted.items():
            previous = self._pods.get(key)
            self._pods[key] = run  # before starting: container events look the pod up
            if previous is None:
                await supervisor.start_pod(run)
                log.info("pod %s/%s started on %s with IP %s", key[0], key[1], run.node, run.ip)
            elif previous != run:
                await supervisor.update_pod(run)

    def _pod_run(self, entry: ScheduledPod, workload: Workload) -> PodRun:
        ip = str(workload.addresses[0])
        run = PodRun.from_pod(
            entry.pod,
            uid=workload.uid,
            base_dir=self.config_dir,
            ip=ip,
            proxy=None if self.agent else f"socks5h://{ip}:{SOCKS_PORT}",
            extra_env={"HOST_IP": self.nodes[workload.node].ip}
            if workload.node in self.nodes
            else {},
        )
        if self.agent is not None:
            run = dataclasses.replace(run, netns=self.agent.pod_netns(run.namespace, run.name))
        return run

    # -- pod health (Kubernetes readiness, simplified) --------------------------------------

    def _on_container_event(self, event: ContainerEvent) -> None:
        log.info("%s", event)
        key = (event.namespace, event.pod)
        run = self._pods.get(key)
        probe = self._probes.pop(key, None)
        if probe is not None:
            probe.cancel()
        if self.plane is None or run is None:
            return
        if event.kind is EventKind.STARTED:
            self._probes[key] = asyncio.ensure_future(self._probe(run))
        else:  # exited, restarting, stopped: no new connections to it from now on
            self.plane.set_health(run.uid, False)

    async def _probe(self, run: PodRun) -> None:
        """Healthy once every container runs and every declared port accepts a connection."""
        ports = [p.container_port for c in run.containers for p in c.ports if p.protocol == "TCP"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 300
        while loop.time() < deadline:
            status = self._supervisor().pod_status(run.namespace, run.name)
            if self.agent is not None:
                is_open = await self.agent.ports_open(run.ip, ports)
            else:
                is_open = await _ports_open(run.ip, ports)
            if status is not None and status.running and is_open:
                self._plane().set_health(run.uid, True)
                return
            await asyncio.sleep(0.05)
        log.warning("pod %s/%s never became ready (ports %s)", run.namespace, run.name, ports)

    # -- introspection -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Readiness of every component, for ``ambient status``."""
        components: list[dict[str, Any]] = [
            {"name": "controlplane", "ready": self.plane is not None, "detail": ""}
        ]
        for node in self.nodes.values():
            components.append(
                {
                    "name": f"ztunnel/{node.name}",
                    "ready": node.ztunnel.ready,
                    "detail": f"{node.ip} admin:15000 metrics:15020 ready:15021",
                }
            )
        if self.supervisor is not None:
            workloads = self._plane().snapshot.workloads
            for pod in self.supervisor.status():
                run = self._pods.get((pod.namespace, pod.name))
                workload = workloads.get(run.uid) if run else None
                healthy = workload is not None and workload.status is WorkloadStatus.HEALTHY
                components.append(
                    {
                        "name": f"pod/{pod.namespace}/{pod.name}",
                        "ready": pod.running and healthy,
                        "detail": pod.describe() + ("" if healthy else " (not ready)"),
                    }
                )
        return {
            "ready": all(c["ready"] for c in components) and len(components) > 1,
            "components": components,
            "pid": os.getpid(),
            "config_dir": str(self.config_dir),
        }

    def pods(self) -> list[dict[str, Any]]:
        """Running pods with what ``ambient exec`` needs."""
        result = []
        for (namespace, name), run in sorted(self._pods.items()):
            workload = self._plane().snapshot.workloads.get(run.uid)
            launch = plan_launch(run, run.containers[0]) if run.containers else None
            result.append(
                {
                    "namespace": namespace,
                    "name": name,
                    "ip": run.ip,
                    "node": run.node,
                    "workload": workload.workload_name if workload else name,
                    "workload_type": workload.workload_type if workload else "pod",
                    "env": dict(launch.env) if launch else {},
                    "cwd": str(launch.cwd) if launch else str(self.config_dir),
                    "netns": run.netns,
                }
            )
        return result

    def _plane(self) -> ControlPlane:
        if self.plane is None:
            raise RuntimeError("the mesh is not started")
        return self.plane

    def _supervisor(self) -> Supervisor:
        if self.supervisor is None:
            raise RuntimeError("the mesh is not started")
        return self.supervisor


async def _feed(subscription: Subscription, state: ProxyState) -> None:
    async for delta in subscription:
        state.apply(delta.upserted, delta.removed, delta.policies_upserted, delta.policies_removed)


async def _ports_open(ip: str, ports: list[int]) -> bool:
    for port in ports:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
    return True
