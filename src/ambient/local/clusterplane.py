"""``ambient controlplane --kubeconfig K``: the control plane of a Kubernetes cluster, as a process.

The same services as the folder mode's control plane (``local.distributed``): the CA
(its root in the state folder), certificates and xDS, ``controlplane.json`` in the
state folder. The configuration comes from the cluster instead of a folder: a
``KubeController`` (``ambient.kube``) watches it, writes waypoint objects and status,
and the Lease ``istio-system/ambient-controlplane`` is its heartbeat. The CA and xDS
ports open once every watched kind has been listed (a ztunnel never gets a half-listed
mesh); until then the process logs which kinds it still waits for, and why (e.g. RBAC
refusing a list).

Identity comes from Kubernetes (:func:`serve_cluster_nodes`): a ztunnel authenticates
to the CA and to xDS with its service-account token (``authorization: Bearer``, over
TLS that authenticates the server only), checked by TokenReview and against the
token's pod in the controller's caches (``ambient.kube.nodeauth``); there are no join
tokens and no node certificates in this mode. The server certificate still comes from
the node PKI in the state folder: ztunnels trust its root (``node_ca_root``), which
the control plane publishes as istiod publishes its root, in the ConfigMap
``istio-system/istio-ca-root-cert`` (``ambient.kube.rootcert``), so that a kubelet on
another host can give it to its ztunnels.
"""

from __future__ import annotations

import asyncio
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

from ambient.identity.certs import CertificateError
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.local.distributed import (
    CONTROLPLANE_FILE,
    DEFAULT_CA_ADDRESS,
    ControlPlaneService,
    _running_pid,
    node_ca_root,
    xds_address_for,
)
from ambient.local.nodeproxy import run_until_signal, start_unless_stopped
from ambient.logconfig import setup_logging
from ambient.monitoring.metrics import ControlPlaneMetrics
from ambient.monitoring.server import monitoring_address_beside, serve_monitoring

__all__ = ["ClusterPlaneOptions", "run_cluster_controlplane", "start_cluster_controlplane"]

log = logging.getLogger("ambient.distributed")

_WAITING_LOG_EVERY = 10.0


@dataclass(frozen=True)
class ClusterPlaneOptions:
    """What ``ambient controlplane --kubeconfig`` may change."""

    workload_cert_ttl: timedelta | None = None
    heartbeat_interval: float = 10.0
    debounce: float = 0.01
    waypoint_image: str = "ambient"
    """The image of the waypoint Deployments it makes (``--waypoint-image``)."""
    monitoring_listen: str | None = None
    """Metrics and Prometheus discovery (default: the certificate service's host, 15014)."""


async def _wait_synced(controller: Any) -> None:
    while True:
        try:
            await controller.wait_synced(_WAITING_LOG_EVERY)
            return
        except TimeoutError:
            waiting = [
                f"{r.info}" + (f" ({r.state.error})" if r.state.error else "")
                for r in controller.unsynced()
            ]
            if waiting:
                log.warning("waiting for the first list of: %s", "; ".join(waiting))


async def serve_cluster_nodes(
    plane: Any,
    ca: Any,
    controller: Any,
    state_root: Path,
    closers: list[Callable[[], Awaitable[None]]],
    *,
    listen: str,
    xds_listen: str | None,
    workload_cert_ttl: timedelta | None = None,
    metrics: ControlPlaneMetrics | None = None,
) -> dict[str, str]:
    """The CA and xDS for a cluster's ztunnels, authenticated by their service-account
    tokens (``KubeNodeAuth`` over ``controller``'s client and pod caches); each stopper
    is appended to ``closers``. Returns the addresses, ``node_ca_root``, ``trust_domain``
    and ``node_auth`` ("kubernetes"). ``$CA_TRUSTED_NODE_ACCOUNTS`` names the accounts
    that may speak for nodes (istiod's; default ``istio-system/ztunnel``)."""
    from ambient.identity.node import NodeAuthority
    from ambient.kube.nodeauth import KubeNodeAuth, trusted_node_accounts
    from ambient.xds.ca_service import MAX_TTL, CaService
    from ambient.xds.callers import BearerTokens, caller_claim_check
    from ambient.xds.server import XdsServer

    trusted = trusted_node_accounts()
    nodes = NodeAuthority.load_or_create(state_root, trust_domain=ca.trust_domain)
    auth = KubeNodeAuth(
        controller.client, controller.cache, trust_domain=ca.trust_domain, trusted=trusted
    )
    callers = BearerTokens(auth.verify, auth.describe())
    ttl = workload_cert_ttl or MAX_TTL
    service = CaService(auth, ca, nodes=nodes, authenticator=callers, default_ttl=ttl)
    ca_server = await service.start(listen)
    closers.append(lambda: ca_server.stop(1.0))
    xds = XdsServer(
        plane,
        credentials=service.server_credentials(mutual=False),
        authorize_node=caller_claim_check(callers),
    )
    if metrics is not None:  # counted as in the folder mode (serve_nodes)
        service.observer = xds.observer = metrics
        metrics.follow(streams=lambda: len(xds.nodes))
    xds_address = xds_listen or xds_address_for(listen)
    xds_port = await xds.start(xds_address)
    closers.append(lambda: xds.stop(1.0))
    return {
        "ca_address": f"{listen.rpartition(':')[0]}:{ca_server.port}",
        "xds_address": f"{xds_address.rpartition(':')[0]}:{xds_port}",
        "node_ca_root": str(node_ca_root(state_root)),
        "trust_domain": ca.trust_domain,
        "node_auth": "kubernetes",
    }


async def start_cluster_controlplane(
    target: ClusterTarget,
    state_root: Path,
    *,
    listen: str = DEFAULT_CA_ADDRESS,
    xds_listen: str | None = None,
    options: ClusterPlaneOptions | None = None,
    on_serving: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[ControlPlaneService, Any]:
    """Watch the cluster, then serve certificates and xDS to its ztunnels; returns the
    service and its ``KubeController``. Raises ``KubeError`` when the kubeconfig is
    unusable, ValueError when ``$CA_TRUSTED_NODE_ACCOUNTS`` is. ``on_serving(info)``
    runs once it serves, before its heartbeat can say so (``controlplane.json``)."""
    from ambient.controlplane.plane import ControlPlane
    from ambient.identity.ca import CertificateAuthority
    from ambient.kube.controller import KubeController
    from ambient.kube.heartbeat import heartbeat
    from ambient.kube.rootcert import publish_root

    options = options or ClusterPlaneOptions()
    client = KubeClient(load_config(target))
    await asyncio.to_thread(state_root.mkdir, parents=True, exist_ok=True, mode=0o700)
    ca = CertificateAuthority.load_or_create(state_root)
    plane = ControlPlane(ca, cluster=True)
    controller = KubeController(
        client, plane, debounce=options.debounce, waypoint_image=options.waypoint_image
    )
    closers: list[Callable[[], Awaitable[None]]] = [client.close, controller.close]
    service_ = ControlPlaneService({}, closers)
    metrics = ControlPlaneMetrics()
    tasks: list[asyncio.Task[None]] = []

    async def stop_tasks() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        plane.close()

    closers.append(stop_tasks)
    info: dict[str, Any] = {"pid": os.getpid(), "kubernetes": client.server}

    def status() -> dict[str, Any]:
        return {**controller.status(), **info}

    try:
        controller.start()
        tasks.append(
            asyncio.ensure_future(
                heartbeat(
                    client,
                    status,
                    interval=options.heartbeat_interval,
                    changed=controller.status_changed,
                )
            )
        )
        log.info("watching %s at %s", target.describe(), client.server)
        await _wait_synced(controller)
        addresses = await serve_cluster_nodes(
            plane,
            ca,
            controller,
            state_root,
            closers,
            listen=listen,
            xds_listen=xds_listen,
            workload_cert_ttl=options.workload_cert_ttl,
            metrics=metrics,
        )
        addresses["monitoring_address"] = await serve_monitoring(
            plane,
            metrics,
            closers,
            options.monitoring_listen or monitoring_address_beside(listen),
            cluster=True,
        )
        root = await asyncio.to_thread(node_ca_root(state_root).read_bytes)
        await publish_root(client, root)  # for kubelets on other hosts (kube.rootcert)
    except BaseException:
        await service_.close()
        raise
    if on_serving is not None:
        on_serving({**info, **addresses})
    info.update(addresses)
    service_.info = dict(info)
    controller.status_changed.set()
    return service_, controller


def run_cluster_controlplane(
    target: ClusterTarget,
    state_root: Path,
    *,
    listen: str,
    xds_listen: str | None,
    log_level: str = "info",
    options: ClusterPlaneOptions | None = None,
) -> int:
    """``ambient controlplane --kubeconfig``: serve until SIGINT/SIGTERM; the exit code."""
    setup_logging(log_level)
    try:
        load_config(target)
    except KubeError as err:
        print(f"error: {err}", file=sys.stderr)
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

    def serving(info: dict[str, Any]) -> None:  # before the heartbeat says so
        tmp = info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, info_file)

    async def body(stop: asyncio.Event) -> int:
        starting = await start_unless_stopped(
            start_cluster_controlplane(
                target,
                state_root,
                listen=listen,
                xds_listen=xds_listen,
                options=options,
                on_serving=serving,
            ),
            stop,
        )
        if starting is None:
            return 0
        try:
            service, _ = starting.result()
        except (OSError, CertificateError, ValueError, KubeError) as exc:
            print(f"error: the control plane failed to start: {exc}", file=sys.stderr)
            return 1
        gc.collect()
        gc.freeze()
        try:
            info = service.info
            print(
                f"controlplane ready on {info['ca_address']} (certificates), "
                f"{info['xds_address']} (xDS), TLS with ztunnels' service-account tokens, "
                f"{info['monitoring_address']} (metrics); "
                f"watching {info['kubernetes']}; server CA root {info['node_ca_root']}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
            log.info("shutting down")
        finally:
            info_file.unlink(missing_ok=True)
            await service.close()
        return 0

    return run_until_signal(body)
