"""One node's proxy process, ``ambient ztunnel`` (:func:`run_ztunnel`): a ztunnel fed by
the control plane.

It loads the credentials ``ambient node join`` stored (or, in a cluster, authenticates with
its service-account tokens), follows the control plane over xDS into a ``ProxyState``, gets
workload certificates through ``CaClient``, and opens its listeners once the first
configuration is applied (so ``:15021`` answers ready only after sync). It hosts the
waypoints scheduled on its node as the one-process mesh does, their L7 configuration
coming over the same xDS stream (``WaypointResource``, applied to an ``L7Config``). When the
control plane is gone it keeps forwarding with the last configuration and certificates
(until they expire) and reconnects with back-off.

This module is apart from ``local.distributed`` (the control plane's process) so that the
node proxy imports none of the control plane's modules (the config loader, the ambient
index, the CA, the monitoring server): each node runs one, and every module it imports
stays resident (``tests/unit/local/test_nodeproxy_imports.py`` holds that line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ambient.identity.certs import CertificateError
from ambient.identity.nodecreds import NodeCredentials
from ambient.identity.tokensource import TokenError
from ambient.local.nodeclients import (
    TokenAuth,
    channel_credentials,
    node_xds_client,
    token_xds_client,
)
from ambient.logconfig import setup_logging

if TYPE_CHECKING:
    from ambient.netns import NetnsThread
    from ambient.state.workload import Workload
    from ambient.ztunnel.waypoints import HostedWaypoint

__all__ = [
    "DEFAULT_XDS_PORT",
    "NODE_CREDENTIALS_DIR",
    "DistributedError",
    "NodeProxy",
    "node_credentials_dir",
    "run_until_signal",
    "run_ztunnel",
    "start_unless_stopped",
    "start_ztunnel",
    "xds_address_for",
]

log = logging.getLogger("ambient.distributed")

DEFAULT_XDS_PORT = 15010
NODE_CREDENTIALS_DIR = "node"  # <node state>/node/{node-key,node-cert,control-plane-roots}.pem


class DistributedError(Exception):
    """A problem the command reports as ``error: ...`` and exits 1."""


def xds_address_for(ca_address: str, port: int = DEFAULT_XDS_PORT) -> str:
    """The xDS address beside a certificate-service address: same host, ``port``."""
    host, _, _ = ca_address.rpartition(":")
    return f"{host or '127.0.0.1'}:{port}"


def node_credentials_dir(node_state: Path) -> Path:
    return node_state / NODE_CREDENTIALS_DIR


# -- running until a signal (shared with the control plane's process) ------------------------------------------------------------------


def run_until_signal(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
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


_T = TypeVar("_T")


async def start_unless_stopped(
    start: Awaitable[_T], stop: asyncio.Event
) -> asyncio.Future[_T] | None:
    """Run ``start`` until it finishes or ``stop`` is set, whichever comes first.

    None when ``stop`` came first (``start`` is then cancelled and awaited); otherwise
    the finished future, whose ``result()`` gives what ``start`` returned or raises what
    it raised, for the caller to report."""
    starting = asyncio.ensure_future(start)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return None
    return starting


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
        starting = await start_unless_stopped(
            start_ztunnel(
                node,
                node_ip,
                node_state,
                ca_address=ca_address,
                xds_address=xds_address,
                node_agent_socket=node_agent_socket,
                token_auth=auth,
            ),
            stop,
        )
        if starting is None:
            return 0
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

    return run_until_signal(body)
