"""``ambient up --single-process``: the control plane, a ztunnel per node and the runtime, in one process.

(The default process model runs the control plane and each ztunnel as their own
processes: ``ambient.local.processes``. This one is kept for debugging, for
machines where separate processes are not wanted, and because the tests use it
where the process boundary is not what they test.)

Startup order matters and is: load and validate every manifest (nothing
starts if any is wrong) → CA → control plane (index, addresses) → one
ztunnel per node, each fed by its own subscription and holding certificates
only for its node's workloads (the control plane's CA refuses others) → the
pods' processes, once their node's ztunnel is listening for them.

Afterwards every configuration change (``apply``, ``delete``, ``label``, an
edit in the config folder) goes through the control plane; the ztunnels follow
its pushes and the runtime follows the pod list, starting, stopping or updating
processes. A label change never restarts a process.

With ``netns=True`` (``ambient up --netns``) the node agent
(``ambient.nodeagent``) gives every node and pod a network namespace, pods'
processes run inside theirs, and ztunnels capture traffic transparently; the
hooks are the lines that mention ``self.agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ambient.config import ConfigSet, load_paths
from ambient.controlplane.allocate import AddressAllocator
from ambient.controlplane.plane import ControlPlane, Subscription
from ambient.identity.ca import CertificateAuthority
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.local.backend import (
    Refused,
    apply_json,
    delete_json,
    label_json,
    manifests_json,
    resources_json,
)
from ambient.local.configops import MeshConfig
from ambient.local.kubelet import Kubelet, scheduled_runs
from ambient.local.processes import CONTROL_PLANE_IP
from ambient.local.statedir import StateDir
from ambient.local.watch import FolderWatcher
from ambient.monitoring.metrics import ControlPlaneMetrics
from ambient.monitoring.server import MONITORING_PORT, MonitoringServer
from ambient.nodeagent.agent import NodeAgent, netns_allocator
from ambient.nodeagent.waypoints import netns_waypoints
from ambient.runtime import PodRun
from ambient.state.proxy import ProxyState
from ambient.waypoint.config import L7Config, waypoint_factory
from ambient.ztunnel.proxy import Ztunnel

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
    """Everything ``ambient up --single-process DIR`` runs."""

    def __init__(
        self,
        config_dir: Path,
        state: StateDir,
        *,
        cert_ttl: float | None = None,
        watch: bool = True,
        netns: bool = False,
    ) -> None:
        self.config_dir = config_dir.absolute()
        self.netns = netns
        self.agent: NodeAgent | None = None
        self.l7 = L7Config()
        self._state = state
        self.cert_ttl = cert_ttl  # workload certificate lifetime in seconds (default 24 h)
        self.watch = watch
        self.nodes: dict[str, Node] = {}
        self.plane: ControlPlane | None = None
        self.config: MeshConfig | None = None
        self.kubelet: Kubelet | None = None
        self._watcher: FolderWatcher | None = None
        self._follow: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._ca: CertificateAuthority | None = None
        self._monitoring: MonitoringServer | None = None

    @property
    def state(self) -> StateDir:
        return self._state

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
        self._ca = ca
        allocator = AddressAllocator.in_state_dir(self.state.root)
        if self.netns:
            allocator = netns_allocator(self.state.root)
            self.agent = NodeAgent(self.state.root)
            await self.agent.start()
        self.plane = ControlPlane(ca, allocator, config=config)
        # L7 objects change no ambient index Delta: follow the configuration itself
        self.plane.on_config(self.l7.set_config)
        self.plane.track_health()  # pods become endpoints once their ports accept connections
        for warning in self.plane.snapshot.warnings:
            log.warning("%s", warning)
        self.config = MeshConfig(self.plane, self.config_dir, config)
        plane = self.plane
        await self._serve_monitoring(plane, self.config)
        self.kubelet = Kubelet(
            self.state.root,
            self.config_dir,
            lambda uid, ready: plane.set_health(uid, ready),
            network=self.agent,
            hide=self.state.secret_paths(),
        )
        await self.kubelet.check_isolation()
        await self._sync()
        self._follow = asyncio.ensure_future(self._follow_plane())
        if self.watch:
            self._watcher = FolderWatcher(self.config_dir, self.config.reload_logged)
            self._watcher.start()

    async def close(self) -> None:
        """Stop pods first (their connections end), then ztunnels, then the control plane."""
        if self._watcher is not None:
            await self._watcher.close()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self.kubelet is not None:
            await self.kubelet.close()
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
        if self._monitoring is not None:
            await self._monitoring.close()
        if self.plane is not None:
            self.plane.close()

    async def _serve_monitoring(self, plane: ControlPlane, config: MeshConfig) -> None:
        """The control plane's monitoring port, where ``ambient up`` serves it (no xDS or
        CA here: pods' certificates are signed in process, so only the index's gauges and
        refused configuration changes are counted)."""
        metrics = ControlPlaneMetrics()
        metrics.follow(services=lambda: len(plane.snapshot.services))
        config.on_rejected = metrics.rejected_config
        self._monitoring = MonitoringServer(plane, metrics)
        await self._monitoring.start(f"{CONTROL_PLANE_IP}:{MONITORING_PORT}")

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
            self.l7.set_config(self._plane().config)  # what the hosted waypoints enforce
            await self._sync_nodes()
            assert self.kubelet is not None
            await self.kubelet.sync(
                scheduled_runs(self._plane(), self.config_dir), self._reconcile_nodes
            )

    async def _reconcile_nodes(self, runs: list[PodRun]) -> None:
        """Listeners for new pods exist before their apps start: one reconcile per node."""
        for name in sorted({run.node for run in runs}):
            node = self.nodes.get(name)
            if node is not None:
                await node.ztunnel.reconcile()

    def _issuer(self, node: str) -> Any:
        sign = functools.partial(self._plane().sign_certificate, node)
        if self.cert_ttl is None:
            return sign
        ttl = timedelta(seconds=self.cert_ttl)

        async def issue(identity: SpiffeId, csr_pem: bytes) -> tuple[bytes, bytes]:
            self._plane().authorize(node, identity)
            assert self._ca is not None
            return self._ca.sign_csr(csr_pem, identity, ttl), self._ca.roots_pem()

        return issue

    async def _sync_nodes(self) -> None:
        plane = self._plane()
        for name, ip in sorted(plane.snapshot.nodes.items()):
            if name in self.nodes:
                continue
            state = ProxyState(name)
            certificates = CertificateManager(self._issuer(name))
            waypoints = waypoint_factory(state, certificates, self.l7)
            ztunnel = Ztunnel(
                name,
                str(ip),
                state,
                certificates,
                pod_networks=self.agent,
                waypoints=netns_waypoints(self.agent, waypoints) if self.agent else waypoints,
            )
            if self.agent is not None:  # before the first push: its pods' namespaces need it
                await self.agent.add_node(name, str(ip), state)
            subscription = plane.subscribe(name)
            first = await anext(subscription)
            state.apply(
                first.upserted, first.removed, first.policies_upserted, first.policies_removed
            )
            await ztunnel.start()
            feeder = asyncio.ensure_future(_feed(subscription, state))
            self.nodes[name] = Node(
                name, str(ip), state, certificates, ztunnel, subscription, feeder
            )
            log.info(
                "ztunnel %s ready on %s (admin :15000, metrics :15020, readiness :15021)", name, ip
            )

    # -- the control API (MeshBackend) ---------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Readiness of every component, for ``ambient status``."""
        components: list[dict[str, Any]] = [
            {"name": "controlplane", "ready": self.plane is not None, "detail": "in process"}
        ]
        for node in self.nodes.values():
            components.append(
                {
                    "name": f"ztunnel/{node.name}",
                    "ready": node.ztunnel.ready,
                    "detail": f"{node.ip} admin:15000 metrics:15020 ready:15021",
                }
            )
        isolation: dict[str, Any] = {}
        if self.kubelet is not None:
            components += self.kubelet.components()
            isolation = self.kubelet.isolation()
        return {
            "ready": all(c["ready"] for c in components) and len(components) > 1,
            "components": components,
            "pid": os.getpid(),
            "config_dir": str(self.config_dir),
            "mode": "single-process",
            "isolation": isolation,
            "warnings": [] if isolation.get("secure", True) else [isolation["detail"]],
            "monitoring": self._monitoring.address if self._monitoring else None,
        }

    async def pods(self) -> list[dict[str, Any]]:
        return self.kubelet.describe_pods() if self.kubelet is not None else []

    async def system_pods(self) -> list[dict[str, Any]]:
        return []  # one process: the control plane and the ztunnels are not pods

    async def resources(self, kind: str, namespace: str | None) -> list[Any]:
        return resources_json(self._config(), kind, namespace)

    async def manifests(self) -> list[dict[str, Any]]:
        return manifests_json(self._config())

    async def node_list(self) -> list[dict[str, Any]]:
        return [
            {"name": n.name, "ip": n.ip, "admin": n.ztunnel.admin_addresses}
            for n in self.nodes.values()
        ]

    async def config_dumps(self, node: str | None) -> list[dict[str, Any]]:
        dumps = [
            n.ztunnel.config_dump() for n in self.nodes.values() if node is None or n.name == node
        ]
        if node is not None and not dumps:
            raise Refused(f"no node named {node!r}", 404)
        return dumps

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return apply_json(self._config(), body)

    async def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        return delete_json(self._config(), body)

    async def label(self, body: dict[str, Any]) -> dict[str, Any]:
        return label_json(self._config(), body)

    def _plane(self) -> ControlPlane:
        if self.plane is None:
            raise RuntimeError("the mesh is not started")
        return self.plane

    def _config(self) -> MeshConfig:
        if self.config is None:
            raise RuntimeError("the mesh is not started")
        return self.config


async def _feed(subscription: Subscription, state: ProxyState) -> None:
    async for delta in subscription:
        state.apply(delta.upserted, delta.removed, delta.policies_upserted, delta.policies_removed)
