"""``ambient node-agent``: one node's agent on a real cluster (the node-agent DaemonSet).

istio-cni's node agent for ambient mode. It runs on the node's host network as root
(``NET_ADMIN``, ``SYS_ADMIN``), and:

1. serves the CNI plugin's events on ``<run dir>/pluginevent.sock``
   (``pluginevents``), deciding with the API server which pods are enrolled and
   adopting their namespaces (``cnipods``; the pods of a previous run are adopted
   again first, from ``<run dir>/cni-pods.json``);
2. serves its node's ztunnel on ``--ztunnel-socket`` (``podsocket``: the pods'
   namespaces, redirection on and off as ztunnel asks, and the pod annotated
   ``ambient.istio.io/redirection: enabled`` while ztunnel serves it: ``annotation``),
   the socket in a host folder both DaemonSets mount (``/var/run/ztunnel``, as Istio's);
3. with ``--install-cni``, only once 1 and 2 serve, installs the plugin into the host's
   CNI folders and keeps its entry chained (``ambient.cni.install``), checking every
   :data:`RECHAIN_INTERVAL` seconds.

On SIGTERM it stops serving; the plugin stays installed unless ``--owner-daemonset``
names a DaemonSet that is gone or being deleted (an uninstall: then the entry and the
executable are removed). An agent restarting (an upgrade, a crash) thus leaves the
plugin in place, and new pods of the node wait ("try again later") until the agent is
back, instead of starting uncaptured — as istio-cni leaves its plugin during upgrades.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ambient.cni import install
from ambient.cni.plugin import DEFAULT_RUN_DIR
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, NotFound
from ambient.netns import missing_capability
from ambient.nodeagent.agent import NodeAgent
from ambient.nodeagent.annotation import PodAnnotator
from ambient.nodeagent.cnipods import STATE_FILE, CniPods
from ambient.nodeagent.enrollment import KubeEnrollment
from ambient.nodeagent.pluginevents import PluginEventServer

__all__ = ["CniInstallOptions", "NodeAgentOptions", "NodeAgentService"]

log = logging.getLogger("ambient.nodeagent")

RECHAIN_INTERVAL = 5.0
DEFAULT_ZTUNNEL_SOCKET = Path("/var/run/ztunnel/nodeagent.sock")


@dataclass(frozen=True)
class CniInstallOptions:
    """Where the host's CNI folders are (as this process sees them) and what to write."""

    bin_dir: Path
    conf_dir: Path
    python: str = install.DEFAULT_PYTHON
    exclude_namespaces: tuple[str, ...] = ("kube-system",)
    host_run_dir: str = DEFAULT_RUN_DIR
    """The run folder as the *host* sees it (what the plugin is told)."""


@dataclass(frozen=True)
class NodeAgentOptions:
    node: str
    target: ClusterTarget = field(default_factory=ClusterTarget)
    run_dir: Path = Path(DEFAULT_RUN_DIR)
    ztunnel_socket: Path | None = DEFAULT_ZTUNNEL_SOCKET
    netns_dir: Path = Path("/var/run/netns")
    install: CniInstallOptions | None = None
    owner_daemonset: str | None = None
    """``namespace/name`` of the DaemonSet running this agent (see the module docstring)."""


class NodeAgentService:
    """The running agent (see the module docstring)."""

    def __init__(self, options: NodeAgentOptions, client: KubeClient) -> None:
        self.options = options
        self.client = client
        self.agent = NodeAgent(options.run_dir)
        self.pods = CniPods(
            self.agent,
            options.node,
            KubeEnrollment(client, options.node),
            netns_dir=options.netns_dir,
            state_file=options.run_dir / STATE_FILE,
        )
        self.events = PluginEventServer(self.pods.add)
        self.agent.on_served = PodAnnotator(client)
        self._rechain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        problem = missing_capability()
        if problem is not None:
            raise OSError(problem.replace("--netns", "the node agent"))
        opts = self.options
        await self.events.start(opts.run_dir)  # makes the run folder, 0700
        await self.pods.restore()
        if opts.ztunnel_socket is not None:
            opts.ztunnel_socket.parent.mkdir(parents=True, exist_ok=True)
            await self.agent.serve_ztunnel(opts.node, opts.ztunnel_socket)
        if opts.install is not None:
            self._rechain = asyncio.ensure_future(self._keep_chained(opts.install))

    async def _keep_chained(self, cni: CniInstallOptions) -> None:
        entry = install.plugin_entry(cni.host_run_dir, cni.exclude_namespaces)
        waiting_logged = False
        while True:
            try:
                install.install_binary(cni.bin_dir, cni.python)
                written = install.ensure_chained(cni.conf_dir, entry)
                if written is not None:
                    log.info("CNI plugin chained into %s", written)
                waiting_logged = False
            except (install.InstallError, OSError) as err:
                if not waiting_logged:
                    log.warning("CNI plugin not installed yet: %s (retrying)", err)
                    waiting_logged = True
            await asyncio.sleep(RECHAIN_INTERVAL)

    async def _being_uninstalled(self) -> bool:
        if self.options.owner_daemonset is None:
            return False
        namespace, _, name = self.options.owner_daemonset.partition("/")
        try:
            ds = await self.client.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}")
        except NotFound:
            return True
        except KubeError as err:
            log.warning("cannot tell an upgrade from an uninstall (%s): the plugin stays", err)
            return False
        return bool((ds.get("metadata") or {}).get("deletionTimestamp"))

    async def close(self) -> None:
        if self._rechain is not None:
            self._rechain.cancel()
        cni = self.options.install
        if cni is not None and await self._being_uninstalled():
            changed = install.unchain(cni.conf_dir, cni.bin_dir)
            log.info("DaemonSet %s removed: CNI plugin unchained from %s",
                     self.options.owner_daemonset, ", ".join(map(str, changed)) or "nothing")  # fmt: skip
        await self.events.close()
        await self.pods.close()
        await self.agent.close()
