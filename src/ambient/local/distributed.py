"""The distributed mode's processes: the control plane as a service (and a ztunnel per node,
``local.nodeproxy``).

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

``ambient ztunnel`` (:func:`run_ztunnel`), one node's proxy, is in ``local.nodeproxy``
(re-exported here): it imports none of this module's control-plane dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ambient.config import ConfigError, ConfigSet, load_paths
from ambient.identity.certs import CertificateError
from ambient.identity.jointokens import JoinTokens
from ambient.identity.members import NodeMembers
from ambient.identity.node import NODE_CA_DIR, ROOT_CERT_FILE, NodeAuthority
from ambient.local.nodeproxy import (
    DEFAULT_XDS_PORT,
    NODE_CREDENTIALS_DIR,
    DistributedError,
    NodeProxy,
    node_credentials_dir,
    run_ztunnel,
    start_ztunnel,
    xds_address_for,
)
from ambient.local.nodeproxy import run_until_signal as _run_until_signal
from ambient.local.revocation import TOKENS_DIR, follow_revocations
from ambient.logconfig import setup_logging
from ambient.monitoring.metrics import ControlPlaneMetrics
from ambient.monitoring.server import monitoring_address_beside, observe_nodes, serve_monitoring

__all__ = [
    "CONTROLPLANE_FILE",
    "DEFAULT_CA_ADDRESS",
    "DEFAULT_JOIN_ADDRESS",
    "DEFAULT_XDS_PORT",
    "JOURNAL_FILE",
    "NODE_CREDENTIALS_DIR",
    "ControlPlaneOptions",
    "ControlPlaneService",
    "DistributedError",
    "NodeProxy",
    "create_token",
    "join",
    "join_tokens",
    "load_config",
    "node_ca_root",
    "node_credentials_dir",
    "run_controlplane",
    "run_ztunnel",
    "start_controlplane",
    "start_ztunnel",
    "xds_address_for",
]

log = logging.getLogger("ambient.distributed")

DEFAULT_CA_ADDRESS = "127.0.0.1:15012"
DEFAULT_JOIN_ADDRESS = "127.0.0.1:15013"
CONTROLPLANE_FILE = "controlplane.json"
JOURNAL_FILE = "changes.jsonl"  # ambient apply/delete/label, replayed at a restart


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
