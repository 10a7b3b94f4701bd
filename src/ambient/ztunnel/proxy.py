"""One node's ztunnel: listeners per local pod, certificates, admin/metrics/readiness.

For every local pod ztunnel listens on ``<podIP>:15080`` (SOCKS5 outbound) and
``<podIP>:15081`` (HTTP CONNECT outbound, ``httpconnect``: the same handler);
for every *enrolled* local pod also on ``<podIP>:15008`` (HBONE inbound).
Listeners follow the pushed state: enrolling a pod opens its HBONE listener,
un-enrolling closes it without breaking connections already open (they
drain), and its outbound listeners stay so that the pod's traffic keeps
flowing, as plain TCP, while it is out of the mesh.

With ``pod_networks`` (``ambient up --netns``) the per-pod listeners live
inside each pod's network namespace instead, and traffic reaches them by
transparent capture: see ``ambient.ztunnel.capture``.

Node endpoints, on the node's address: ``:15000`` admin (``/config_dump``;
``/debug/tasks``: every asyncio task and HBONE connection, ``ambient.taskdump``),
``:15020`` metrics (``/metrics``), ``:15021`` readiness (``/healthz/ready``).

While it runs, the heap that bursts of traffic freed is handed back to the kernel
every 10 s (``ambient.memtrim``), so its resident set follows what it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ambient.hbone.admission import PendingHandshakes
from ambient.hbone.messages import HBONE_PORT
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.protocol import HboneSettings
from ambient.httpd import AdminServer, Request, Response
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.malloctune import keep_read_buffers_in_heap
from ambient.memtrim import trim_heap_periodically
from ambient.rlimit import raise_open_files_limit
from ambient.state.proxy import ProxyState
from ambient.state.workload import Service, TunnelProtocol, Workload, waypoint_of
from ambient.taskdump import debug_text
from ambient.ztunnel.admin import index as admin_index
from ambient.ztunnel.admin import logging_endpoint
from ambient.ztunnel.authorization import Authorizer, MemoizedAuthorizer
from ambient.ztunnel.capture import InPodProxy, PodNamespaces, PodNetworks
from ambient.ztunnel.connections import ConnectionTracker
from ambient.ztunnel.dial import Dialer
from ambient.ztunnel.dumpparts import certificate_json, workload_state
from ambient.ztunnel.inputs import ProxyInputs
from ambient.ztunnel.listeners import HostSockets, PodListeners
from ambient.ztunnel.metrics import Metrics
from ambient.ztunnel.outbound import OutboundHandler
from ambient.ztunnel.waypoints import WaypointFactory, WaypointHost

log = logging.getLogger("ambient.ztunnel")

__all__ = ["ADMIN_PORT", "METRICS_PORT", "READINESS_PORT", "Ztunnel"]

ADMIN_PORT = 15000
METRICS_PORT = 15020
READINESS_PORT = 15021


class Ztunnel:
    """The L4 proxy of one node."""

    def __init__(
        self,
        node: str,
        node_ip: str,
        state: ProxyState,
        certificates: CertificateManager,
        *,
        authorizer: Callable[[], Authorizer] | None = None,
        settings: HboneSettings | None = None,
        ports: tuple[int, int, int] = (ADMIN_PORT, METRICS_PORT, READINESS_PORT),
        waypoints: WaypointFactory | None = None,
        pod_networks: PodNetworks | None = None,
    ) -> None:
        self.node = node
        self.node_ip = node_ip
        self.state = state
        self.certificates = certificates
        # The policies pushed with the state decide, unless a test injects its own.
        memo = MemoizedAuthorizer(state)
        self.authorizer = authorizer or (lambda: memo)
        self.settings = settings or HboneSettings()
        self.metrics = Metrics()
        # In-pod mode (--netns): listeners and upstream sockets inside pods' namespaces.
        namespaces = PodNamespaces() if pod_networks is not None else None
        self.pool = ConnectionPool(
            settings=self.settings, dialer=namespaces.dial if namespaces else None
        )
        self.connections = ConnectionTracker(state, lambda: self.authorizer())
        self.inputs = ProxyInputs(
            node=node,
            state=state,
            metrics=self.metrics,
            pool=self.pool,
            settings=self.settings,
            certificate=self._certificate,  # (``certificate`` is this, one await further)
            current_certificate=self.current_certificate,
            authorizer=lambda: self.authorizer(),
            connections=self.connections,
            # Connections still in their TLS handshake, bounded across every pod's listener.
            handshakes=PendingHandshakes(),
        )
        self.in_pod = (
            InPodProxy(self.inputs, pod_networks, namespaces)
            if pod_networks is not None and namespaces is not None
            else None
        )
        self._ports = ports
        self._pods: dict[str, PodListeners] = {}
        self.waypoints = WaypointHost(node, waypoints)
        self._certs: dict[SpiffeId, WorkloadCertificate] = {}
        self._reconcile_lock = asyncio.Lock()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._pending = False
        self._ready = False
        self._synced = asyncio.Event()
        self._admin: list[AdminServer] = []
        self._stop_trimming: Callable[[], None] | None = None
        self.admin_addresses: dict[str, tuple[str, int]] = {}
        self._unsubscribe = certificates.subscribe(self._on_certificate)
        state.on_change(lambda _: self.request_reconcile())

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the node endpoints and the listeners for the current state."""
        raise_open_files_limit()
        keep_read_buffers_in_heap()  # TLS reads without a mapping each (ambient.malloctune)
        # The heap a burst of traffic freed goes back to the kernel (``ambient.memtrim``).
        self._stop_trimming = trim_heap_periodically()
        admin, metrics, ready = self._ports
        endpoints = {
            f"admin :{admin}": [
                ("/", "this list"),
                ("/config_dump", "the current configuration (JSON)"),
                ("POST /logging", "query or change log levels (?level=info,access=debug)"),
                ("/waypoint_config_dump", "what the hosted waypoints compiled (JSON)"),
                ("/debug/tasks", "every asyncio task and HBONE connection, for a stall (text)"),
            ],
            f"metrics :{metrics}": [
                ("/metrics", "Prometheus metrics"),
                ("/stats/prometheus", "the same (Istio's path)"),
            ],
            f"readiness :{ready}": [("/healthz/ready", "200 once the first push is in")],
        }
        servers = {
            "admin": (
                AdminServer(
                    {
                        "/": lambda _r: admin_index(endpoints),
                        "/config_dump": self._config_dump,
                        "/debug/tasks": _debug_tasks,
                        "/logging": logging_endpoint,
                        "/waypoint_config_dump": self._waypoint_config_dump,
                        "POST /logging": logging_endpoint,
                    }
                ),
                admin,
            ),
            "metrics": (
                AdminServer({"/metrics": self._metrics, "/stats/prometheus": self._metrics}),
                metrics,
            ),
            "readiness": (AdminServer({"/healthz/ready": self._readiness}), ready),
        }
        for name, (server, port) in servers.items():
            self.admin_addresses[name] = await server.start(self.node_ip, port)
            self._admin.append(server)
        await self.reconcile()
        self._ready = True

    async def close(self) -> None:
        """Close every listener and connection."""
        self._ready = False
        self._unsubscribe()
        if self._stop_trimming is not None:
            self._stop_trimming()
            self._stop_trimming = None
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
        for pod in list(self._pods.values()):
            await pod.close(drain=False)
        self._pods.clear()
        await self.waypoints.close()
        if self.in_pod is not None:
            await self.in_pod.close()
        await self.pool.close()
        for server in self._admin:
            await server.close()

    @property
    def ready(self) -> bool:
        return self._ready

    # -- listeners follow the state ------------------------------------------------------

    def request_reconcile(self) -> None:
        """Schedule a reconcile (coalesced: many pushes, one pass)."""
        if self._reconcile_task is None or self._reconcile_task.done():
            self._reconcile_task = asyncio.ensure_future(self.reconcile())
        else:
            self._pending = True

    async def reconcile(self) -> None:
        async with self._reconcile_lock:
            while True:
                self._pending = False
                await self._reconcile_once()
                if not self._pending:
                    break
            self._synced.set()

    async def _reconcile_once(self) -> None:
        local = [w for w in self.state.local_workloads() if w.addresses]
        # A waypoint's pod gets no per-pod listeners: the waypoint itself serves its address.
        await self.waypoints.reconcile(w for w in local if waypoint_of(w) is not None)
        wanted = {w.uid: w for w in local if waypoint_of(w) is None}
        if self.in_pod is not None:
            await self.in_pod.reconcile(wanted)
        else:
            await self._reconcile_local(wanted)
        self.connections.close_denied()

    async def _reconcile_local(self, wanted: dict[str, Workload]) -> None:
        """Local mode: listeners on each pod's own address in the host's namespace."""
        for uid in list(self._pods):
            if uid not in wanted:
                await self._pods.pop(uid).close(drain=True)
        for uid, workload in wanted.items():
            pod = self._pods.get(uid)
            if pod is not None and pod.workload.addresses != workload.addresses:
                await self._pods.pop(uid).close(drain=True)
                pod = None
            if pod is None:
                # Plaintext to an enrolled pod is judged here, at the source: nothing
                # captures it at the destination without network namespaces.
                outbound = OutboundHandler(self.inputs, uid, Dialer(), judge_plaintext=True)
                pod = self._pods[uid] = PodListeners(
                    self.inputs, workload, HostSockets(), outbound, Dialer()
                )
            pod.workload = workload
            try:
                await self._ensure_listeners(pod)
            except OSError as exc:
                log.error("ztunnel %s: cannot listen for pod %s: %s", self.node, workload.name, exc)

    async def _ensure_listeners(self, pod: PodListeners) -> None:
        workload = pod.workload
        await pod.open_proxies()
        enrolled = workload.tunnel_protocol is TunnelProtocol.HBONE
        if enrolled and pod.hbone is None:
            await pod.open_hbone()
            log.info(
                "ztunnel %s: HBONE inbound for %s/%s (%s) on %s:%d",
                self.node,
                workload.namespace,
                workload.name,
                workload.identity,
                pod.ip,
                HBONE_PORT,
            )
        elif not enrolled and pod.hbone is not None:
            await pod.close_hbone()  # open tunnels drain on their own
            log.info(
                "ztunnel %s: %s/%s left the mesh; HBONE inbound closed",
                self.node,
                workload.namespace,
                workload.name,
            )

    # -- certificates ----------------------------------------------------------------

    async def certificate(self, identity: SpiffeId) -> WorkloadCertificate:
        """``identity``'s certificate, fetched if needed (remembered for listeners)."""
        return await self._certificate(identity)

    def current_certificate(self, identity: SpiffeId) -> WorkloadCertificate:
        """The last certificate of ``identity`` (after :meth:`certificate` fetched one)."""
        return self._certs[identity]

    async def _certificate(self, identity: SpiffeId) -> WorkloadCertificate:
        cert = await self.certificates.get(identity)
        self._certs[identity] = cert
        return cert

    def _on_certificate(self, cert: WorkloadCertificate) -> None:
        self._certs[cert.identity] = cert

    # -- node endpoints ----------------------------------------------------------------

    def config_dump(self) -> dict[str, Any]:
        """ztunnel's view, as ``/config_dump`` serves it (and ``ambient ztunnel-config`` reads)."""
        return {
            "node": self.node,
            "workloads": [_workload_json(w) for _, w in sorted(self.state.workloads.items())],
            "services": [
                _service_json(s, self.state) for _, s in sorted(self.state.services.items())
            ],
            "certificates": [certificate_json(c) for c in self.certificates.snapshot()],
            "workloadState": workload_state(
                list(self.metrics.live.values()),
                {uid: p.workload for uid, p in self._pods.items()},
            ),
            "policies": [
                {
                    "name": p.name,
                    "namespace": p.namespace,
                    "action": p.action.value,
                    "scope": p.scope.value,
                    "selector": dict(p.selector) if p.selector else None,
                    "dryRun": p.dry_run,
                    "groups": len(p.groups),
                }
                for p in sorted(self.state.policies.authorizations(), key=lambda p: p.key)
            ],
            "peerAuthentications": [
                {
                    "name": pa.name,
                    "namespace": pa.namespace,
                    "mode": pa.mode.value,
                    "selector": dict(pa.selector) if pa.selector else None,
                    "portLevelMtls": {str(port): mode.value for port, mode in pa.port_level},
                }
                for pa in sorted(self.state.policies.peer_authentications(), key=lambda p: p.key)
            ],
            "waypoints": self.waypoints.config_dump(),
            "listeners": self.in_pod.listeners()
            if self.in_pod is not None
            else {
                uid: {
                    "socks5": p.socks is not None,
                    "httpConnect": p.connect is not None,
                    "hbone": p.hbone is not None,
                }
                for uid, p in sorted(self._pods.items())
            },
        }

    def _config_dump(self, _request: Request) -> Response:
        body = json.dumps(self.config_dump(), indent=2).encode()
        return Response(200, body, "application/json")

    def _waypoint_config_dump(self, _request: Request) -> Response:
        body = json.dumps(self.waypoints.proxy_configs(), indent=2).encode()
        return Response(200, body, "application/json")

    def _metrics(self, _request: Request) -> Response:
        return Response(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)

    def _readiness(self, _request: Request) -> Response:
        if self._ready and self._synced.is_set():
            return Response(200, b"ready\n")
        return Response(503, b"not ready: waiting for the first configuration push\n")


def _debug_tasks(_request: Request) -> Response:
    """Every asyncio task and HBONE connection of this process (``ambient.taskdump``)."""
    return Response(200, debug_text().encode())


def _workload_json(w: Workload) -> dict[str, Any]:
    return {
        "uid": w.uid,
        "name": w.name,
        "namespace": w.namespace,
        "workloadIps": [str(ip) for ip in w.addresses],
        "serviceAccount": w.service_account,
        "node": w.node,
        "protocol": w.tunnel_protocol.value,
        "workloadName": w.workload_name,
        "workloadType": w.workload_type,
        "canonicalName": w.canonical_name,
        "canonicalRevision": w.canonical_revision,
        "status": w.status.value,
        "waypoint": w.waypoint.destination if w.waypoint else None,
        "services": {
            key: [[p.service_port, p.target_port] for p in ports]
            for key, ports in w.services.items()
        },
        "trustDomain": w.trust_domain,
        "clusterId": w.cluster_id,
    }


def _service_json(s: Service, state: ProxyState) -> dict[str, Any]:
    return {
        "name": s.name,
        "namespace": s.namespace,
        "hostname": s.hostname,
        "vips": [str(ip) for ip in s.addresses],
        "ports": {str(p.service_port): p.target_port for p in s.ports},
        "endpoints": [w.uid for w in state.endpoints(s)],
        "waypoint": s.waypoint.destination if s.waypoint else None,
        "subjectAltNames": list(s.subject_alt_names),
    }
