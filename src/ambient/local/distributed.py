"""The distributed mode's processes: the control plane as a service, and a ztunnel per node.

``ambient controlplane`` (:func:`run_controlplane`) loads a configuration folder and serves,
from one process:

- the certificate service (Istio's 15012, mutual TLS with node certificates) and node
  joins (15013, TLS authenticating the server only), both from ``CaService``;
- the workload xDS API (delta ADS) on its own port, 15010 by default, with the same
  mutual-TLS credentials and ``node_claim_check``: a stream may only claim the node of its
  client certificate. (Istio serves both on 15012; here they are separate gRPC servers
  because the certificate port caps messages at 64 KiB, too small for xDS.)

It records ``controlplane.json`` in its state folder (pid, addresses, the node PKI root
that joining nodes must trust) and prints ``controlplane ready on ...`` to stderr.

``ambient ztunnel`` (:func:`run_ztunnel`) is one node's proxy: it loads the credentials
``ambient node join`` stored, follows the control plane over xDS into a ``ProxyState``,
gets workload certificates through ``CaClient``, and opens its listeners once the first
configuration is applied (so ``:15021`` answers ready only after sync). It hosts the
waypoints scheduled on its node as the one-process mesh does, their L7 configuration
coming over the same xDS stream (``WaypointResource``, applied to an ``L7Config``). When the control
plane is gone it keeps forwarding with the last configuration and certificates (until they
expire) and reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ambient.config import ConfigError, ConfigSet, load_paths
from ambient.identity.certs import CertificateError
from ambient.identity.jointokens import JoinTokens
from ambient.identity.members import NodeMembers
from ambient.identity.node import NODE_CA_DIR, ROOT_CERT_FILE, NodeAuthority
from ambient.identity.nodecreds import NodeCredentials
from ambient.identity.tokensource import TokenError
from ambient.local.nodeclients import (
    TokenAuth,
    channel_credentials,
    node_xds_client,
    token_xds_client,
)
from ambient.local.revocation import TOKENS_DIR, follow_revocations
from ambient.logconfig import setup_logging
from ambient.monitoring.metrics import ControlPlaneMetrics
from ambient.monitoring.server import monitoring_address_beside, observe_nodes, serve_monitoring

if TYPE_CHECKING:
    from ambient.netns import NetnsThread
    from ambient.state.workload import Workload
    from ambient.ztunnel.waypoints import HostedWaypoint

log = logging.getLogger("ambient.distributed")

DEFAULT_CA_ADDRESS = "127.0.0.1:15012"
DEFAULT_JOIN_ADDRESS = "127.0.0.1:15013"
DEFAULT_XDS_PORT = 15010
CONTROLPLANE_FILE = "controlplane.json"
JOURNAL_FILE = "changes.jsonl"  # ambient apply/delete/label, replayed at a restart
NODE_CREDENTIALS_DIR = "node"  # <node state>/node/{node-key,node-cert,control-plane-roots}.pem


class DistributedError(Exception):
    """A problem the command reports as ``error: ...`` and exits 1."""


def xds_address_for(ca_address: str, port: int = DEFAULT_XDS_PORT) -> str:
    """The xDS address beside a certificate-service address: same host, ``port``."""
    host, _, _ = ca_address.rpartition(":")
    return f"{host or '127.0.0.1'}:{port}"


def load_config(config_dir: Path) -> ConfigSet | None:
    """The configuration, or None after printing its problems as ``ambient up`` does."""
    try:
        config = load_paths([config_dir])
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"nothing was started: fix the {len(exc.problems)} problem(s) above", file=sys.stderr)
        return None
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def join_tokens(state_root: Path) -> JoinTokens:
    """The join token store of the control plane whose state folder is ``state_root``."""
    authority = NodeAuthority.load_or_create(state_root)
    return JoinTokens(state_root / TOKENS_DIR, authority)


def node_ca_root(state_root: Path) -> Path:
    return state_root / NODE_CA_DIR / ROOT_CERT_FILE


def node_credentials_dir(node_state: Path) -> Path:
    return node_state / NODE_CREDENTIALS_DIR


def create_token(state_root: Path, node: str, ttl: timedelta) -> str:
    state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return join_tokens(state_root).create(node, ttl)


def join(address: str, token: str, node: str, ca_root: Path, node_state: Path) -> Path:
    """Redeem ``token`` at the join port; store the credentials; returns where."""
    from ambient.xds.ca_client import join_node

    try:
        roots = ca_root.read_bytes()
    except OSError as exc:
        raise DistributedError(f"cannot read the node CA root {ca_root}: {exc.strerror}") from None
    credentials = asyncio.run(join_node(address, token, node, roots))
    directory = node_credentials_dir(node_state)
    credentials.save(directory)
    return directory


# -- running until a signal ------------------------------------------------------------------


def _run_until_signal(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    from ambient.launcher.sandbox import make_undumpable

    make_undumpable()  # it holds keys; a pod of an unprivileged mesh has the same uid

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await body(stop)

    try:
        import uvloop

        return uvloop.run(main())
    except KeyboardInterrupt:  # pragma: no cover - signal handlers take care of it
        return 130


# -- the control plane ------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlPlaneOptions:
    """What ``ambient controlplane`` adds to the bare service (all optional)."""

    watch: bool = True
    """Reload the config folder when a file in it changes."""
    api_socket: Path | None = None
    """Serve ``ambient.local.cpapi`` here (``ambient up`` does); changes are journaled."""
    track_health: bool = False
    """Pods are endpoints only once reported ready on the API socket."""
    workload_cert_ttl: timedelta | None = None
    """Lifetime of workload certificates (default: the CA service's 24 h)."""
    netns_addresses: bool = False
    """Pods and Services get routable addresses (``ambient up --netns``), not loopback ones."""
    monitoring_listen: str | None = None
    """Metrics and Prometheus discovery (default: the certificate service's host, 15014)."""


@dataclass
class ControlPlaneService:
    """A started control plane: stop it with :meth:`close`."""

    info: dict[str, Any]
    closers: list[Callable[[], Awaitable[None]]]

    async def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception as exc:  # stop the rest anyway
                log.warning("stopping the control plane: %s: %s", type(exc).__name__, exc)


async def start_controlplane(
    config_dir: Path,
    state_root: Path,
    config: ConfigSet,
    *,
    listen: str = DEFAULT_CA_ADDRESS,
    join_listen: str = DEFAULT_JOIN_ADDRESS,
    xds_listen: str | None = None,
    options: ControlPlaneOptions | None = None,
) -> ControlPlaneService:
    """CA, node PKI, control plane, certificate service and xDS server, serving.

    ``options``: the folder watch, the API socket for ``ambient up`` and certificate
    lifetimes (see :class:`ControlPlaneOptions`).
    """
    from ambient.local.configops import MeshConfig
    from ambient.local.cpapi import ControlPlaneApi
    from ambient.local.watch import FolderWatcher

    options = options or ControlPlaneOptions()
    from ambient.controlplane.allocate import AddressAllocator
    from ambient.controlplane.plane import ControlPlane
    from ambient.identity.ca import CertificateAuthority

    ca = CertificateAuthority.load_or_create(
        state_root, plugin_dir=_prepare(config_dir, state_root)
    )
    allocator = AddressAllocator.in_state_dir(state_root)
    if options.netns_addresses:
        from ambient.nodeagent.agent import netns_allocator

        allocator = netns_allocator(state_root)
    plane = ControlPlane(ca, allocator, config=config)
    for warning in plane.snapshot.warnings:
        log.warning("%s", warning)
    closers: list[Callable[[], Awaitable[None]]] = []
    journal = state_root / JOURNAL_FILE if options.api_socket is not None else None
    mesh_config = MeshConfig(plane, config_dir, config, journal=journal)
    replayed = mesh_config.replay()
    if replayed:
        log.info("replayed %d change(s) made with ambient apply/delete/label", replayed)

    async def close_plane() -> None:
        plane.close()

    closers.append(close_plane)
    service_ = ControlPlaneService({}, closers)
    metrics = ControlPlaneMetrics()
    try:
        mesh_config.on_rejected = metrics.rejected_config
        if options.api_socket is not None:
            api = ControlPlaneApi(mesh_config, track_health=options.track_health)
            await api.start(options.api_socket)
            closers.append(api.close)
        if options.watch:
            watcher = FolderWatcher(config_dir, mesh_config.reload_logged)
            watcher.start()
            closers.append(watcher.close)
        addresses = await serve_nodes(
            plane,
            ca,
            state_root,
            closers,
            listen=listen,
            join_listen=join_listen,
            xds_listen=xds_listen,
            workload_cert_ttl=options.workload_cert_ttl,
            metrics=metrics,
        )
        addresses["monitoring_address"] = await serve_monitoring(
            plane, metrics, closers, options.monitoring_listen or monitoring_address_beside(listen)
        )
    except BaseException:
        await service_.close()
        raise
    service_.info = {
        "pid": os.getpid(),
        "config_dir": str(config_dir),
        **addresses,
        "nodes": {name: str(ip) for name, ip in sorted(plane.snapshot.nodes.items())},
    }
    return service_


async def serve_nodes(
    plane: Any,
    ca: Any,
    state_root: Path,
    closers: list[Callable[[], Awaitable[None]]],
    *,
    listen: str,
    join_listen: str,
    xds_listen: str | None,
    workload_cert_ttl: timedelta | None = None,
    metrics: ControlPlaneMetrics | None = None,
) -> dict[str, str]:
    """What nodes talk to, for a ``ControlPlane`` and its CA: joins and certificates
    (``CaService``), xDS (mutual TLS, a stream may claim only its certificate's node),
    revocations followed; each stopper is appended to ``closers``; ``metrics`` counts
    certificate requests, pushes and NACKs. Returns the addresses
    (``ca_address``, ``join_address``, ``xds_address``), ``node_ca_root``, ``trust_domain``.
    Both the folder mode and the cluster mode (``local.clusterplane``) serve nodes so."""
    from ambient.xds.ca_service import MAX_TTL, CaService, node_claim_check
    from ambient.xds.server import XdsServer

    nodes = NodeAuthority.load_or_create(state_root, trust_domain=ca.trust_domain)
    tokens = JoinTokens(state_root / TOKENS_DIR, nodes)
    members = NodeMembers(state_root / TOKENS_DIR)
    ttl = workload_cert_ttl or MAX_TTL
    service = CaService(plane, ca, nodes=nodes, tokens=tokens, members=members, default_ttl=ttl)
    ca_server = await service.start(listen, join_address=join_listen)
    closers.append(lambda: ca_server.stop(1.0))
    xds = XdsServer(
        plane,
        credentials=service.server_credentials(mutual=True),
        authorize_node=node_claim_check(nodes, members),
    )
    if metrics is not None:
        observe_nodes(metrics, service, xds, ca)
    xds_address = xds_listen or xds_address_for(listen)
    xds_port = await xds.start(xds_address)
    closers.append(lambda: xds.stop(1.0))
    watch = asyncio.ensure_future(follow_revocations(members, xds))

    async def stop_watch() -> None:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch

    closers.append(stop_watch)
    return {
        "ca_address": f"{listen.rpartition(':')[0]}:{ca_server.port}",
        "join_address": f"{join_listen.rpartition(':')[0]}:{ca_server.join_port}",
        "xds_address": f"{xds_address.rpartition(':')[0]}:{xds_port}",
        "node_ca_root": str(node_ca_root(state_root)),
        "trust_domain": ca.trust_domain,
    }


def _running_pid(info_file: Path) -> int | None:
    """The pid recorded in ``controlplane.json`` if that process still runs."""
    try:
        pid = json.loads(info_file.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _prepare(config_dir: Path, state_root: Path) -> Path | None:
    """Create the state folder; the plug-in CA folder ``DIR/cacerts`` if there is one."""
    state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    plugin_dir = config_dir / "cacerts"
    return plugin_dir if plugin_dir.is_dir() else None


def run_controlplane(
    config_dir: Path,
    state_root: Path,
    *,
    listen: str,
    join_listen: str,
    xds_listen: str | None,
    log_level: str = "info",
    options: ControlPlaneOptions | None = None,
) -> int:
    """``ambient controlplane``: serve until SIGINT/SIGTERM; returns the exit code."""
    setup_logging(log_level)
    config_dir = config_dir.absolute()
    config = load_config(config_dir)
    if config is None:
        return 1
    info_file = state_root / CONTROLPLANE_FILE
    running = _running_pid(info_file)
    if running is not None:
        print(
            f"error: a control plane is already running for {state_root} (pid {running}); "
            "stop it first, or use another --state-dir",
            file=sys.stderr,
        )
        return 1

    async def body(stop: asyncio.Event) -> int:
        try:
            service = await start_controlplane(
                config_dir,
                state_root,
                config,
                listen=listen,
                join_listen=join_listen,
                xds_listen=xds_listen,
                options=options,
            )
        except (OSError, CertificateError, ValueError) as exc:
            print(f"error: the control plane failed to start: {exc}", file=sys.stderr)
            return 1
        # The loaded configuration and the index live as long as the process: move them
        # out of the collector's generations so full collections stop re-scanning them.
        gc.collect()
        gc.freeze()
        try:
            tmp = info_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(service.info, indent=2))
            os.replace(tmp, info_file)
            info = service.info
            print(
                f"controlplane ready on {info['ca_address']} (certificates, mTLS), "
                f"{info['join_address']} (node joins), {info['xds_address']} (xDS, mTLS), "
                f"{info['monitoring_address']} (metrics, Prometheus discovery); "
                f"node CA root {info['node_ca_root']}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            log.info("shutting down")
        finally:
            info_file.unlink(missing_ok=True)
            await service.close()
        return 0

    return _run_until_signal(body)


# -- a node's ztunnel ---------------------------------------------------------------------------


@dataclass
class NodeProxy:
    """A started ztunnel fed by the control plane: stop it with :meth:`close`."""

    ztunnel: Any  # ambient.ztunnel.proxy.Ztunnel
    xds: Any  # ambient.xds.client.XdsClient
    ca_client: Any  # ambient.xds.ca_client.CaClient
    certificates: Any  # ambient.identity.manager.CertificateManager
    node_agent: Any = None  # ambient.nodeagent.podsocket.PodSocketClient (--netns)

    async def close(self) -> None:
        await self.ztunnel.close()
        if self.node_agent is not None:
            await self.node_agent.close()
        await self.xds.close()
        await self.certificates.close()
        await self.ca_client.close()


async def start_ztunnel(
    node: str,
    node_ip: str,
    node_state: Path,
    *,
    ca_address: str,
    xds_address: str,
    sync_timeout: float | None = None,
    ports: tuple[int, int, int] | None = None,
    node_agent_socket: Path | None = None,
    token_auth: TokenAuth | None = None,
) -> NodeProxy:
    """Load ``node``'s credentials, follow the control plane, start the ztunnel once synced.

    With ``token_auth`` (a cluster's ztunnel) there are no node credentials: the CA and
    xDS clients authenticate with its tokens (``ambient.local.nodeclients``).
    With ``node_agent_socket`` (``ambient up --netns``) the ztunnel serves its pods in-pod,
    inside the network namespaces the node agent lists on that socket
    (``ambient.nodeagent.podsocket``), and hosts its waypoints in their own namespaces.
    """
    from ambient.identity.manager import CertificateManager
    from ambient.state.proxy import ProxyState
    from ambient.waypoint.l7config import L7Config
    from ambient.waypoint.workers import workers_from_env
    from ambient.xds.ca_client import CaClient
    from ambient.ztunnel.proxy import ADMIN_PORT, METRICS_PORT, READINESS_PORT, Ztunnel

    try:
        workers = workers_from_env()  # processes per hosted waypoint
    except ValueError as exc:
        raise DistributedError(str(exc)) from None
    state = ProxyState(node)
    l7 = L7Config()
    if token_auth is not None:
        ca_client = CaClient.with_token(ca_address, node, token_auth.source, token_auth.roots_pem)
        xds = token_xds_client(xds_address, node, state, token_auth, l7=l7)
    else:
        directory = node_credentials_dir(node_state)
        if not directory.is_dir():
            raise DistributedError(
                f"node {node} has no credentials in {directory}: run `ambient node join` first"
            )
        credentials = NodeCredentials.load(directory, node)

        def renewed(fresh: NodeCredentials) -> None:
            fresh.save(directory)
            xds.credentials = channel_credentials(fresh)  # the next xDS stream presents it

        ca_client = CaClient(ca_address, credentials, on_node_renewed=renewed)
        xds = node_xds_client(xds_address, node, state, credentials, l7=l7)
    certificates = CertificateManager(ca_client.issue)

    def waypoints(workload: Workload, netns: NetnsThread | None = None) -> HostedWaypoint:
        """The waypoint of a waypoint pod; the waypoint's modules (~6 MB) are imported with
        the first one, so a node that hosts none does not carry them."""
        from ambient.waypoint.config import waypoint_factory

        return waypoint_factory(state, certificates, l7, workers=workers)(workload, netns)

    agent = None
    if node_agent_socket is not None:
        from ambient.nodeagent.podsocket import PodSocketClient
        from ambient.nodeagent.waypoints import netns_waypoints

        agent = PodSocketClient(node_agent_socket, node)
    ztunnel = Ztunnel(
        node,
        node_ip,
        state,
        certificates,
        ports=ports or (ADMIN_PORT, METRICS_PORT, READINESS_PORT),
        waypoints=netns_waypoints(agent, waypoints) if agent is not None else waypoints,
        pod_networks=agent,
    )
    proxy = NodeProxy(ztunnel, xds, ca_client, certificates, agent)
    xds.start()
    try:
        if agent is not None:
            await agent.start()
            agent.on_change = ztunnel.request_reconcile
        await asyncio.wait_for(xds.synced.wait(), sync_timeout)
        await ztunnel.start()
    except BaseException:
        await proxy.close()
        raise
    return proxy


def run_ztunnel(
    node: str,
    node_ip: str,
    node_state: Path,
    *,
    ca_address: str,
    xds_address: str,
    log_level: str = "info",
    node_agent_socket: Path | None = None,
    token_auth: Callable[[], AbstractAsyncContextManager[TokenAuth]] | None = None,
) -> int:
    """``ambient ztunnel``: run one node's proxy until SIGINT/SIGTERM (a cluster's ztunnel:
    ``token_auth`` is its ``ClusterIdentity.session``, failing fast without a token)."""
    setup_logging(log_level)

    async def body(stop: asyncio.Event) -> int:
        session = token_auth() if token_auth is not None else contextlib.nullcontext(None)
        try:
            async with session as auth:
                return await serve(stop, auth)
        except TokenError as exc:
            print(f"error: ztunnel {node} cannot authenticate: {exc}", file=sys.stderr)
            return 1

    async def serve(stop: asyncio.Event, auth: TokenAuth | None) -> int:
        starting = asyncio.ensure_future(
            start_ztunnel(
                node,
                node_ip,
                node_state,
                ca_address=ca_address,
                xds_address=xds_address,
                node_agent_socket=node_agent_socket,
                token_auth=auth,
            )
        )
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        stopping.cancel()
        try:
            proxy = starting.result()
        except (DistributedError, CertificateError, OSError) as exc:
            print(f"error: ztunnel {node} failed to start: {exc}", file=sys.stderr)
            return 1
        print(
            f"ztunnel {node} ready on {node_ip} (admin :15000, metrics :15020, readiness :15021); "
            f"control plane {ca_address} (certificates), {xds_address} (xDS)",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
            log.info("shutting down")
        finally:
            await proxy.close()
        return 0

    return _run_until_signal(body)
