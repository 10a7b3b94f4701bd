"""``ambient up --kubeconfig K --nodes node-1,node-2``: this host's part of a cluster.

What runs (one process, plus children)::

    ambient up --kubeconfig K --nodes node-1,node-2   (this process: the kubelets)
     ├─ ambient controlplane --kubeconfig K ...        unless --control-plane names one
     │     CA :15012 and xDS :15010 on this host's address (InternalIP)
     ├─ pod istio-system/ztunnel-node-1 (ambient ztunnel, run as a pod of node-1)
     ├─ pod istio-system/ztunnel-node-2
     └─ the pods the scheduler binds to node-1 and node-2, as processes

For each node (``ambient.kubelet``): the Node is registered and heartbeats, its pods
run with addresses from its ``podCIDR``, its ztunnel is one of its pods (fed by the
control plane with its service-account token), enrolled pods are annotated as
istio-cni does. The control plane is a host process (a supervised child, restarted
with back-off), not a pod: the other hosts reach it at ``HOST:15012`` and
``HOST:15010`` (``--control-plane HOST:15012`` on their ``ambient up``).

This host's address (every local Node's ``InternalIP``, where the control plane
listens) is ``--node-ip``, else the address this host reaches the API server from.
The control plane's root (which ztunnels check its certificate against) is its own
file when it runs here, else the ConfigMap ``istio-system/istio-ca-root-cert`` it
publishes (or ``--ca-root FILE``).

Nothing of the mesh is stored here but keys and logs: the state folder holds the
control plane's CA, each node's ztunnel token (``nodes/<node>/ztunnel/``), the logs
and the kubelets' socket (``kubelet.sock``, for ``ambient exec`` and ``ambient
logs``); ``mesh.json`` records the process for ``ambient down``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ambient.config.resources import Container
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.kube.kinds import NODE, KindInfo
from ambient.kube.reflector import Reflector
from ambient.kube.rootcert import read_root
from ambient.kubelet.addresses import PodRoutes, can_add_addresses
from ambient.kubelet.kubelet import NodeKubelet, NodeOptions
from ambient.kubelet.logs import LogRefused, pod_log_source
from ambient.kubelet.node import FIELD_MANAGER
from ambient.kubelet.podmetrics import read_pod_port
from ambient.kubelet.podspec import KubePod
from ambient.kubelet.redirection import NamespaceLabels, Redirection
from ambient.kubelet.ztunnel import NodeZtunnel, ZtunnelConfig
from ambient.launcher.client import Launcher
from ambient.local.kubeletapi import KubeletApi
from ambient.local.nodeproxy import start_unless_stopped
from ambient.local.statedir import StateDir
from ambient.runtime import PodRun, Supervisor
from ambient.runtime.podlogs import LogSource
from ambient.runtime.security import isolation_report
from ambient.runtime.status import ContainerEvent

__all__ = ["ClusterNodes", "ClusterNodesOptions", "source_address"]

log = logging.getLogger("ambient.up")

CA_PORT, XDS_PORT = 15012, 15010
SYSTEM_NAMESPACE = "ambient-system"
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class ClusterNodesOptions:
    """What ``ambient up --kubeconfig`` was given."""

    nodes: tuple[str, ...]
    control_plane: str | None = None
    """``HOST:PORT`` of a control plane elsewhere (its xDS on the same host, port 15010)."""
    node_ip: str | None = None
    ca_root: Path | None = None
    netns: bool = False
    log_level: str = "info"
    base_dir: Path = Path("/")


def source_address(server: str) -> str:
    """The address this host reaches ``server`` (an API server URL) from."""
    parts = urlsplit(server)
    host = parts.hostname or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, parts.port or 443))
        address: str = sock.getsockname()[0]
        return address


def ambient_on_path(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Make ``ambient`` resolvable on the ``PATH`` the pods inherit; the folder added, if any.

    Waypoint pods run ``ambient waypoint hosted`` (the product's image, whose entrypoint
    is on its ``PATH``); here the host is the image, and ``.venv/bin/ambient up`` is
    often run without the virtualenv on ``PATH``. The folder of this installation's
    ``ambient`` script is *appended*, so that every other command (``python3``...)
    resolves as before."""
    path = environ.get("PATH") or os.defpath
    if shutil.which("ambient", path=path) is not None:
        return None
    for folder in (Path(sys.argv[0]).resolve().parent, Path(sys.executable).parent):
        if (folder / "ambient").is_file() and os.access(folder / "ambient", os.X_OK):
            environ["PATH"] = f"{path}{os.pathsep}{folder}"
            return str(folder)
    return None


def _ambient() -> list[str]:
    return [sys.executable, "-m", "ambient"]


class _NodeWatch:
    """Every Node (a ``Reflector`` sink), for the routes to other hosts' pods."""

    def __init__(self, routes: PodRoutes) -> None:
        self.routes = routes
        self.nodes: dict[str, dict[str, Any]] = {}
        self._sync: asyncio.Task[None] | None = None

    def replace(self, _info: KindInfo, items: list[dict[str, Any]]) -> None:
        self.nodes = {i["metadata"]["name"]: i for i in items}
        self._changed()

    def event(self, _info: KindInfo, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = obj
        self._changed()

    def _changed(self) -> None:
        if self._sync is None or self._sync.done():
            self._sync = asyncio.ensure_future(self.routes.sync(list(self.nodes.values())))
        else:
            self._sync.add_done_callback(lambda _t: self._changed())


class ClusterNodes:
    """See the module docstring."""

    def __init__(
        self, target: ClusterTarget, state: StateDir, options: ClusterNodesOptions
    ) -> None:
        self.target = target
        self.state = state
        self.options = options
        self.client: KubeClient | None = None
        self.launcher = Launcher()
        """The one pod launcher of this host: the control plane, the ztunnels, the pods."""
        self.system = Supervisor(
            state.root,
            backoff_initial=0.5,
            backoff_max=10.0,
            on_event=self._on_system_event,
            launcher=self.launcher,
        )
        self.isolation: dict[str, Any] = {"secure": False, "detail": "not started"}
        self.kubelets: dict[str, NodeKubelet] = {}
        self.ztunnels: dict[str, NodeZtunnel] = {}
        self.redirections: list[Redirection] = []
        self.namespaces: NamespaceLabels | None = None
        self.api: KubeletApi | None = None
        self.agent: Any = None
        self.internal_ip = ""
        self.cp_info: dict[str, Any] = {}
        self.cp_state = state.root / "controlplane"
        self.hide: tuple[Path, ...] = ()
        self._tasks: list[asyncio.Task[None]] = []
        self._routes: PodRoutes | None = None
        self._node_xds: list[Any] = []  # --netns: the node agent's xDS clients

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> None:
        options = self.options
        self.state.create()
        added = ambient_on_path()
        if added is not None:
            log.info("pods' PATH: %s appended (this installation's `ambient`)", added)
        self.hide = self.state.secret_paths()
        await self._check_isolation()  # the launcher starts before any gRPC channel
        client = self.client = KubeClient(load_config(self.target), field_manager=FIELD_MANAGER)
        try:
            version = await client.get("/version")
        except KubeError as err:
            raise RuntimeError(f"cannot reach the API server: {err}") from None
        log.info("cluster %s (Kubernetes %s)", client.server, version.get("gitVersion", "?"))
        self.internal_ip = options.node_ip or source_address(client.server)
        host_addresses = can_add_addresses()
        if not host_addresses:
            log.warning(
                "not root: pods get loopback addresses (127.x.y.z, the twins of their podCIDR "
                "addresses); the API server refuses those in EndpointSlices, so Services get "
                "no EndpointSlices (the mesh routes by pod address and works). Run as root "
                "for routable pod addresses."
            )
        if options.netns:
            from ambient.nodeagent.agent import NodeAgent

            self.agent = NodeAgent(self.state.root)
            await self.agent.start()
        await self._launch_control_plane()
        self.api = KubeletApi(
            client.server,
            self._describe,
            lambda: sorted(self.kubelets),
            self.status,
            self._log_source,
            self._pod_port,
        )
        socket_path = str(self.state.extra_socket("kubelet"))
        await self.api.start(socket_path)
        for name in options.nodes:  # Ready while the control plane starts
            await self._register_node(name, host_addresses, socket_path)
        await self._await_control_plane()
        self.namespaces = NamespaceLabels(client)
        await self.namespaces.start()
        for name in options.nodes:
            await self._start_node(name)
        if host_addresses and self.agent is None:
            self._routes = PodRoutes(options.nodes)
            watch = _NodeWatch(self._routes)
            self._tasks.append(asyncio.ensure_future(Reflector(client, NODE, watch).run()))

    async def _check_isolation(self) -> None:
        """Start the launcher; say (loudly if not) whether pods are kept from the keys."""
        secure, detail = isolation_report(await self.launcher.start())
        if secure:
            log.info("pod isolation: %s", detail)
        else:
            log.warning("WARNING: %s", detail)
        self.isolation = {"secure": secure, "detail": detail}

    async def _launch_control_plane(self) -> None:
        if self.options.control_plane is not None:
            ca = self.options.control_plane
            host = ca.rpartition(":")[0]
            self.cp_info = {"ca_address": ca, "xds_address": f"{host}:{XDS_PORT}"}
            return
        self.cp_state.mkdir(mode=0o700, parents=True, exist_ok=True)
        info_file = self.cp_state / "controlplane.json"
        info_file.unlink(missing_ok=True)
        argv = [*_ambient(), "controlplane"]
        if self.target.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.target.kubeconfig.absolute())]
        if self.target.context is not None:
            argv += ["--context", self.target.context]
        ip = self.internal_ip
        host = f"[{ip}]" if ":" in ip else ip
        argv += [
            "--state-dir",
            str(self.cp_state),
            "--listen",
            f"{host}:{CA_PORT}",
            "--xds-listen",
            f"{host}:{XDS_PORT}",
            "--log-level",
            self.options.log_level,
        ]
        run = PodRun(
            namespace=SYSTEM_NAMESPACE,
            name="controlplane",
            uid=f"{SYSTEM_NAMESPACE}/controlplane",
            ip=ip,
            containers=(Container(name="controlplane", command=tuple(argv)),),
            node="",
            base_dir=self.state.root,
        )
        await self.system.start_pod(run)

    async def _await_control_plane(self) -> None:
        if self.options.control_plane is not None:
            return
        info_file = self.cp_state / "controlplane.json"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        log_path = self.system.log_path(SYSTEM_NAMESPACE, "controlplane", "controlplane")
        while not info_file.is_file():
            status = self.system.pod_status(SYSTEM_NAMESPACE, "controlplane")
            if loop.time() > deadline:
                raise RuntimeError(
                    f"the control plane was not ready within {START_TIMEOUT:g}s; see {log_path}"
                )
            if status is not None and status.restarts >= 3:
                raise RuntimeError(f"the control plane keeps exiting; see {log_path}")
            await asyncio.sleep(0.1)
        self.cp_info = json.loads(info_file.read_text())
        log.info(
            "control plane ready: certificates %s, xDS %s",
            self.cp_info.get("ca_address"),
            self.cp_info.get("xds_address"),
        )

    async def _root_pem(self) -> bytes:
        if self.options.ca_root is not None:
            return await asyncio.to_thread(self.options.ca_root.read_bytes)
        local = self.cp_info.get("node_ca_root")
        if local:
            return await asyncio.to_thread(Path(local).read_bytes)
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        logged = False
        while True:  # the control plane may be starting on its host
            try:
                return await read_root(self.client)
            except KubeError as err:
                if loop.time() > deadline:
                    raise RuntimeError(f"{err}; give --ca-root FILE") from None
                if not logged:
                    log.info("waiting for the control plane to publish its root: %s", err)
                    logged = True
            await asyncio.sleep(1.0)

    async def _register_node(self, name: str, host_addresses: bool, socket_path: str) -> None:
        """The node's kubelet, its Node registered (Ready); its pods run from ``_start_node``."""
        assert self.client is not None

        async def before_start(pod: KubePod, ip: str) -> None:
            ztunnel = self.ztunnels[name]
            if ztunnel.is_ztunnel(pod):
                await ztunnel.prepare(pod, ip)
            elif not pod.host_network:
                await ztunnel.wait_listener(pod, ip)

        kubelet = NodeKubelet(
            self.client,
            name,
            NodeOptions(
                internal_ip=self.internal_ip,
                state_root=self.state.root,
                base_dir=self.options.base_dir,
                cluster=self.client.server,
                host_addresses=host_addresses,
                agent=self.agent,
                socket_path=socket_path,
                launcher=self.launcher,
                hide=self.hide,
            ),
            before_start=before_start,
            no_proxy=lambda pod: self.ztunnels[name].is_ztunnel(pod),
            system=lambda pod: self.ztunnels[name].is_ztunnel(pod),
        )
        self.kubelets[name] = kubelet
        await kubelet.register()

    async def _start_node(self, name: str) -> None:
        """The node's ztunnel pod and files (and ``--netns`` node agent), then its pods."""
        assert self.client is not None and self.namespaces is not None
        kubelet = self.kubelets[name]
        files = self.state.root / "nodes" / name / "ztunnel"
        agent_socket = None
        if self.agent is not None:
            agent_socket = self.state.extra_socket(f"nodeagent-{name}")
        config = ZtunnelConfig(
            ca_address=str(self.cp_info["ca_address"]),
            xds_address=str(self.cp_info["xds_address"]),
            files=files,
            log_level=self.options.log_level,
            node_agent_socket=agent_socket,
        )
        ztunnel = NodeZtunnel(self.client, name, config, self._root_pem)
        self.ztunnels[name] = ztunnel
        uid = await ztunnel.ensure(kubelet.registration.uid)
        await ztunnel.write_files(uid)
        if self.agent is not None and agent_socket is not None:
            await self._start_node_agent(name, ztunnel, agent_socket)
        await kubelet.start(on_host=ztunnel.is_ztunnel)
        pods = kubelet.pods
        assert pods is not None
        redirection = Redirection(
            self.client,
            name,
            pods.current,
            self.namespaces,
            ztunnel.config_dump,
            skip=ztunnel.is_ztunnel,
        )
        pods.on_change.append(redirection.poke)
        redirection.start()
        self.redirections.append(redirection)

    async def _start_node_agent(self, name: str, ztunnel: NodeZtunnel, socket_path: Path) -> None:
        """``--netns``: the node's namespace, DNS and Service rules (fed over xDS as the node,
        with its ztunnel's token), and the socket its ztunnel learns its pods from."""
        from ambient.identity.tokensource import FileTokenSource
        from ambient.local.nodeclients import TokenAuth, token_xds_client
        from ambient.state.proxy import ProxyState

        state = ProxyState(name)
        roots = await asyncio.to_thread(ztunnel.root_file.read_bytes)
        auth = TokenAuth(FileTokenSource(ztunnel.token_file), roots)
        client = token_xds_client(str(self.cp_info["xds_address"]), name, state, auth)
        self._node_xds.append(client)
        client.start()
        await asyncio.wait_for(client.synced.wait(), START_TIMEOUT)
        index = len(self._node_xds)
        await self.agent.add_node(name, f"127.1.0.{index}", state)
        await self.agent.serve_ztunnel(name, socket_path)

    # -- stop -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Pods (the ztunnels among them), then the Nodes NotReady, then the control plane."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for redirection in self.redirections:
            await redirection.close()
        await asyncio.gather(*(k.stop() for k in self.kubelets.values()), return_exceptions=True)
        for ztunnel in self.ztunnels.values():
            await ztunnel.close()
        if self._routes is not None:
            await self._routes.close()
        if self.namespaces is not None:
            await self.namespaces.close()
        if self.api is not None:
            await self.api.close()
        await self.system.close()
        await self.launcher.close()
        for client in self._node_xds:
            await client.close()
        if self.agent is not None:
            await self.agent.close()
        if self.client is not None:
            await self.client.close()

    # -- what the socket answers ----------------------------------------------------------

    def _describe(self, namespace: str, name: str) -> dict[str, Any] | None:
        for kubelet in self.kubelets.values():
            if kubelet.pods is not None:
                found = kubelet.pods.describe(namespace, name)
                if found is not None:
                    return found
        return None

    def _log_source(self, namespace: str, name: str, uid: str, container: str) -> LogSource:
        """A container's log on one of the nodes here (``ambient.kubelet.logs``)."""
        for kubelet in self.kubelets.values():
            if kubelet.pods is not None and (namespace, name) in kubelet.pods.pods:
                return pod_log_source(kubelet.pods, namespace, name, uid, container)
        nodes = ", ".join(sorted(self.kubelets))
        raise LogRefused(f"pod {namespace}/{name} does not run on this host's nodes ({nodes})")

    async def _pod_port(
        self, namespace: str, name: str, uid: str, port: int, path: str
    ) -> dict[str, Any]:
        """A mesh pod's metrics or readiness port on one of the nodes here
        (``ambient.kubelet.podmetrics``)."""
        for kubelet in self.kubelets.values():
            if kubelet.pods is not None and (namespace, name) in kubelet.pods.pods:
                return await read_pod_port(kubelet.pods, namespace, name, uid, port, path)
        nodes = ", ".join(sorted(self.kubelets))
        raise LogRefused(f"pod {namespace}/{name} does not run on this host's nodes ({nodes})")

    async def status(self) -> dict[str, Any]:
        components: list[dict[str, Any]] = []
        cp = self.system.pod_status(SYSTEM_NAMESPACE, "controlplane")
        if cp is not None:
            components.append(
                {"name": "controlplane", "ready": cp.running, "detail": cp.describe()}
            )
        for name, kubelet in sorted(self.kubelets.items()):
            pods = kubelet.pods.pods if kubelet.pods is not None else {}
            ready = sum(
                1 for r in pods.values() if r.records and all(c.ready for c in r.records.values())
            )
            components.append(
                {
                    "name": f"node/{name}",
                    "ready": kubelet.pods is not None,
                    "detail": f"{len(pods)} pod(s), {ready} ready; podCIDR "
                    f"{kubelet.registration.pod_cidr}",
                }
            )
        return {
            "ready": all(c["ready"] for c in components),
            "components": components,
            "isolation": self.isolation,
        }

    def _on_system_event(self, event: ContainerEvent) -> None:
        log.info("%s", event)


def run_cluster_nodes(target: ClusterTarget, state: StateDir, options: ClusterNodesOptions) -> int:
    """``ambient up --kubeconfig``: run until SIGINT/SIGTERM; the exit code."""
    import signal

    from ambient.launcher.sandbox import make_undumpable
    from ambient.local.statedir import MeshNotRunning

    make_undumpable()  # pods of an unprivileged mesh share its uid: no ptrace, no /proc/PID/*
    logging.basicConfig(
        level=getattr(logging, options.log_level.upper()),
        format="%(asctime)s %(levelname)-5s %(name)s  %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        info = state.read_mesh_file()
    except MeshNotRunning:
        pass
    else:
        print(
            f"error: ambient up is already running for {state.root} (pid {info['pid']}); "
            "stop it first, or use another --state-dir",
            file=sys.stderr,
        )
        return 1

    async def main() -> int:
        import os

        host = ClusterNodes(target, state, options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        code = 0
        try:
            starting = await start_unless_stopped(host.start(), stop)
            if starting is None:
                return 130
            starting.result()
            state.write_mesh_file(
                {
                    "pid": os.getpid(),
                    "socket": host.api.path if host.api else "",
                    "kubernetes": host.client.server if host.client else "",
                    "nodes": list(options.nodes),
                }
            )
            log.info(
                "up: node(s) %s on %s (%s); state in %s. Try `ambient zc workloads "
                "--kubeconfig K`. Ctrl-C stops them.",
                ", ".join(options.nodes),
                host.internal_ip,
                host.client.server if host.client else "?",
                state.root,
            )
            await stop.wait()
            log.info("shutting down")
        except (OSError, RuntimeError, KubeError, ValueError) as exc:
            log.error("ambient up failed: %s", exc)
            code = 1
        finally:
            state.clear_mesh_file()
            await host.close()
            state.remove_private_socket_dir()
        return code

    try:
        import uvloop

        return uvloop.run(main())
    except KeyboardInterrupt:  # pragma: no cover - the signal handlers take care of it
        return 130
