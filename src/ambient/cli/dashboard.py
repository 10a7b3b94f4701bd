"""``ambient dashboard``: the mesh's live traffic graph in a browser (Kiali's job, built in).

It runs in the foreground like ``istioctl dashboard kiali`` (default port 20001, Kiali's;
loopback only unless ``--address`` says otherwise) and prints the page's URL. It opens no
browser unless ``--browser`` is given (istioctl opens one by default; meshes here run
mostly on servers without a display). On a cluster (``--kubeconfig``) it reads the same
things through the API server: the control plane's monitoring address from its heartbeat,
the ztunnels' config dumps (found as ``zc`` finds them), and the mesh's objects.

On a cluster a scrape target that is a pod (its ``namespace`` and ``pod`` labels) of a
node that ``ambient up`` runs on this host is read through that node's kubelet socket
(``ambient.kube.podport``), as an operator reaches a pod's metrics through the API
server's pod proxy: with ``--netns`` a waypoint's metrics port is inside its pod's
network namespace, which the host cannot reach. Any other target (the control plane,
the ztunnels, nodes run elsewhere) is scraped directly. (The alternative, the node
proxy serving its waypoints' metrics on the node's own address, would need a port or
path per waypoint in the control plane's target list and would change what a stock
Prometheus scrapes; reading through the node changes neither.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.request
from typing import Any

import click

from ambient.cli.app import CONTEXT, fail, log_level_option, parse_duration, state, target_options
from ambient.cli.client import ApiError, MeshClient
from ambient.local.statedir import MeshNotRunning, StateDir

__all__ = ["FolderSource", "dashboard"]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
log = logging.getLogger("ambient.dashboard")


class FolderSource:
    """A mesh started by ``ambient up``, through its state folder (``dashboard.MeshSource``)."""

    def __init__(self, where: StateDir) -> None:
        self.where = where

    def describe(self) -> str:
        return str(self.where.root)

    def _get(self, path: str) -> Any:
        try:
            return MeshClient(self.where, timeout=10).get(path)
        except (ApiError, MeshNotRunning) as exc:
            raise OSError(str(exc)) from None

    def scrape_targets(self) -> list[dict[str, Any]]:
        from ambient.monitoring.server import SD_PATH

        monitoring = self._get("/status").get("monitoring")
        if not monitoring:
            raise OSError("the mesh serves no monitoring port (started by an older ambient)")
        return _target_groups(f"http://{monitoring}{SD_PATH}")

    def config_dumps(self) -> list[dict[str, Any]]:
        dumps = self._get("/config_dump")
        return dumps if isinstance(dumps, list) else []

    def manifests(self) -> list[dict[str, Any]]:
        items = self._get("/manifests")
        return [i["manifest"] for i in items if isinstance(i, dict) and "manifest" in i]


class ClusterSource:
    """A mesh on a Kubernetes cluster (``dashboard.MeshSource``); each call is one short
    session with the API server (the collector runs it in a thread)."""

    def __init__(self, where: Any) -> None:
        from ambient.kube.api import load_config

        self.where = where
        self.config = load_config(where)  # KubeError: the caller says why

    def describe(self) -> str:
        return str(self.where.describe())

    def _run(self, body: Any) -> Any:
        from ambient.kube.api import KubeClient, KubeError

        async def main() -> Any:
            client = KubeClient(self.config)
            try:
                return await body(client)
            finally:
                await client.close()

        try:
            return asyncio.run(main())
        except KubeError as exc:
            raise OSError(str(exc)) from None

    def scrape_targets(self) -> list[dict[str, Any]]:
        from ambient.kube.heartbeat import read_status
        from ambient.monitoring.server import SD_PATH

        status = self._run(read_status)
        monitoring = (status or {}).get("monitoring_address") if status else None
        if not status or not status.get("alive") or not isinstance(monitoring, str):
            raise OSError(
                "the cluster's control plane is not running (or serves no monitoring port)"
            )
        return _target_groups(f"http://{monitoring}{SD_PATH}")

    def scrape(self, url: str, labels: dict[str, str], timeout: float) -> Any:
        """One target's samples: a pod's through its node when it runs on this host
        (see the module docstring), else directly."""
        from urllib.parse import urlsplit

        from ambient.dashboard.samples import parse, scrape
        from ambient.kube.podport import read_through_node

        namespace, pod = labels.get("namespace"), labels.get("pod")
        where = urlsplit(url)
        if namespace and pod and where.port is not None:
            port, path = where.port, where.path

            async def body(client: Any) -> str | None:
                async with asyncio.timeout(timeout * 2):  # the pod, its node, the read
                    return await read_through_node(client, namespace, pod, port, path)

            try:
                text = self._run(body)
            except TimeoutError:
                raise OSError(f"pod {namespace}/{pod} not read within {timeout * 2:g}s") from None
            if text is not None:
                return parse(text)
        return scrape(url, timeout)

    def config_dumps(self) -> list[dict[str, Any]]:
        from ambient.kube import ztunnels

        failures: list[str] = []

        async def body(client: Any) -> list[dict[str, Any]]:
            endpoints = await ztunnels.ztunnel_endpoints(client, None)
            return await ztunnels.config_dumps(endpoints, failures=failures) if endpoints else []

        dumps: list[dict[str, Any]] = self._run(body)
        for reason in failures:  # a node that is down leaves the others shown
            log.warning("%s", reason)
        return dumps

    def manifests(self) -> list[dict[str, Any]]:
        from ambient.kube.api import NotFound
        from ambient.kube.convert import view
        from ambient.kube.kinds import WATCHED

        async def body(client: Any) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for info in WATCHED:
                try:
                    items, _ = await client.list(info.path(info.scope))
                except NotFound:  # the kind is not served (its CRD is not installed)
                    continue
                found += [view(info, raw) for raw in items]
            return found

        manifests: list[dict[str, Any]] = self._run(body)
        return manifests


def _target_groups(url: str) -> list[dict[str, Any]]:
    with _NO_PROXY.open(url, timeout=5) as answer:
        groups = json.loads(answer.read())
    if not isinstance(groups, list):
        raise OSError(f"{url} answered no list of target groups")
    return groups


def _seconds(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    return parse_duration(value).total_seconds()


DEFAULT_PORT = 20001  # Kiali's


async def listen(server: Any, address: str, port: int | None) -> str:
    """Start ``server`` on ``port``, or without one on Kiali's port, falling back to a
    free one when it is taken (as ``istioctl dashboard`` prefers the remote port); the
    page's URL. Raises ``OSError`` from the last attempt."""
    attempts = [port] if port is not None else [DEFAULT_PORT, 0]
    for candidate in attempts[:-1]:
        with contextlib.suppress(OSError):
            url: str = await server.start(address, candidate)
            return url
    last: str = await server.start(address, attempts[-1])
    return last


async def _serve(
    source: FolderSource | ClusterSource,
    address: str,
    port: int | None,
    refresh: float,
    window: float,
    browser: bool,
) -> None:
    from ambient.dashboard.server import Collector, DashboardServer

    collector = Collector(source, interval=refresh, window=window)
    server = DashboardServer(collector)
    try:
        url = await listen(server, address, port)
    except OSError as exc:
        fail(f"cannot listen on {address}:{port or DEFAULT_PORT}: {exc.strerror or exc}")
    click.echo(f"Dashboard of the mesh of {source.describe()} at {url} (Ctrl-C stops it)")
    if browser:
        import webbrowser

        webbrowser.open(url)
    try:
        await collector.run()
    finally:
        await server.close()


@click.command("dashboard", context_settings=CONTEXT)
@target_options
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (the page shows the mesh's workloads and policies: "
    "keep it on loopback unless you mean to share it).",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on (0 picks a free one). Default: Kiali's 20001, or a free one "
    "when it is taken (as istioctl dashboard).",
)
@click.option(
    "--refresh",
    default="5s",
    show_default=True,
    callback=_seconds,
    help="How often the metrics are scraped and the page redrawn.",
)
@click.option(
    "--window",
    default="1m",
    show_default=True,
    callback=_seconds,
    help="Rates, error rates and p99 are over this last stretch of time.",
)
@click.option("--browser", is_flag=True, help="Open the page in a browser as well.")
@log_level_option
@click.pass_context
def dashboard(
    ctx: click.Context,
    state_dir: str | None,
    address: str,
    port: int | None,
    refresh: float,
    window: float,
    browser: bool,
    log_level: str,
) -> None:
    """Serve a live graph of the mesh's traffic on a local web page (as Kiali).

    Workloads and waypoints are nodes; each hop is an edge with its requests per second,
    its share of the caller's requests, error rate and p99 latency (HTTP, from the
    waypoints' metrics) or connections and bytes per second (TCP, from ztunnel's), and
    whether it is mutual TLS. Click a workload for its identity, pods, policies and
    routes. The dashboard scrapes the proxies itself (the targets of the control plane's
    monitoring port): no Prometheus needed. With --kubeconfig: a mesh on a cluster.

    \b
    Example:
      ambient dashboard            # then open http://127.0.0.1:20001/
    """
    from ambient.cli.app import target

    if refresh <= 0 or window < refresh:
        fail("--window must be at least --refresh, and --refresh more than 0")
    source: FolderSource | ClusterSource
    cluster = target(ctx)
    if cluster is not None:
        from ambient.kube.api import KubeError

        try:
            source = ClusterSource(cluster)
        except KubeError as exc:
            fail(str(exc))
    else:
        where = state(ctx)
        try:
            MeshClient(where, timeout=5).get("/status")
        except (ApiError, MeshNotRunning) as exc:
            fail(str(exc))
        source = FolderSource(where)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(source, address, port, refresh, window, browser))
