"""One node's kubelet: its Node, its pods, its pod network (``NodeKubelet``).

Start order: the Node is registered (Ready, Lease) and its ``podCIDR`` awaited; the
pod network is set up (the node's dummy interface, or with ``--netns`` its
namespace); the node's pods are watched and run; then the heartbeat. Stop order:
the pods are stopped (their statuses written), the Node reported NotReady, the
network removed. The Node and its pods stay in the API server: the next ``ambient
up`` of the same node runs them again (a kubelet restart); the node-lifecycle
controller taints a node that stays down, and its pods are evicted after the
tolerations' 300 s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ambient.kube.api import KubeClient
from ambient.kubelet.addresses import HostAddresses, PodCidr
from ambient.kubelet.network import HostPodNetwork, NetnsPodNetwork
from ambient.kubelet.node import SOCKET_ANNOTATION, NodeRegistration
from ambient.kubelet.pods import NodePods, PodNetwork
from ambient.kubelet.podspec import KubePod
from ambient.launcher.client import Launcher

__all__ = ["NodeKubelet", "NodeOptions"]

log = logging.getLogger("ambient.kubelet")


@dataclass(frozen=True)
class NodeOptions:
    """How a node runs its pods."""

    internal_ip: str
    state_root: Path
    """Logs (``logs/``) and each node's files (``nodes/<node>/``)."""
    base_dir: Path
    """The working folder of containers without ``workingDir``."""
    cluster: str = ""
    """The API server's URL (names the node's interface)."""
    host_addresses: bool = True
    """Pod addresses on a dummy interface (root); False: loopback addresses."""
    agent: Any = None
    """``--netns``: the node agent (``ambient.nodeagent.agent.NodeAgent``)."""
    socket_path: str = ""
    """This host's kubelet socket, recorded on the Node for ``ambient exec``."""
    taints: tuple[Mapping[str, str], ...] = ()
    """Taints the Node is registered with (``--register-with-taints``)."""
    renew_interval: float = 10.0
    """How often the node's Lease is renewed."""
    launcher: Launcher | None = None
    """The pod launcher to share with the host's other nodes (default: the node's own)."""
    hide: tuple[Path, ...] = ()
    """Folders besides ``state_root`` that pods must not see (the private socket folder)."""


class NodeKubelet:
    """See the module docstring."""

    def __init__(
        self,
        client: KubeClient,
        name: str,
        options: NodeOptions,
        *,
        before_start: Callable[[KubePod, str], Awaitable[None]] | None = None,
        extra_env: Callable[[KubePod], Mapping[str, str]] | None = None,
        no_proxy: Callable[[KubePod], bool] | None = None,
        system: Callable[[KubePod], bool] | None = None,
    ) -> None:
        """``system``: the node's pods that are the mesh's own (its ztunnel), run as the
        mesh; the others are isolated (``NodePods``)."""
        self.client = client
        self.name = name
        self.options = options
        self.node_state = options.state_root / "nodes" / name
        annotations = {SOCKET_ANNOTATION: options.socket_path} if options.socket_path else {}
        self.registration = NodeRegistration(
            client,
            name,
            options.internal_ip,
            storage=options.state_root,
            annotations=annotations,
            taints=options.taints,
            renew_interval=options.renew_interval,
        )
        self._hooks = (before_start, extra_env, no_proxy, system)
        self.addresses: HostAddresses | None = None
        self.pods: NodePods | None = None

    async def register(self) -> None:
        """Register the Node (Ready, Lease) and learn its ``podCIDR``."""
        await self.registration.register()
        self.node_state.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def start(self, *, on_host: Callable[[KubePod], bool] = lambda _pod: False) -> None:
        """Set up the pod network and run the node's pods (after :meth:`register`).

        With ``--netns``, pods for which ``on_host`` is true (the node's ztunnel) get an
        address on the host instead of a namespace."""
        if not self.registration.uid:
            await self.register()
        if self.options.host_addresses:
            self.addresses = HostAddresses(self.options.cluster, self.name, self.node_state)
            await self.addresses.start()
        host = HostPodNetwork(self.addresses)

        def network(pod: KubePod) -> PodNetwork:
            return host if netns is None or on_host(pod) else netns

        netns = None
        if self.options.agent is not None:
            netns = NetnsPodNetwork(self.options.agent, self.name)
        cidr = PodCidr(self.registration.pod_cidr, loopback=not self.options.host_addresses)
        before_start, extra_env, no_proxy, system = self._hooks
        self.pods = NodePods(
            self.client,
            self.name,
            host_ip=self.options.internal_ip,
            cidr=cidr,
            network=network,
            state_root=self.options.state_root,
            base_dir=self.options.base_dir,
            before_start=before_start,
            extra_env=extra_env,
            no_proxy=no_proxy,
            system=system,
            hide=self.options.hide,
            launcher=self.options.launcher,
        )
        await self.pods.start()
        self.registration.start_heartbeat()

    async def stop(self) -> None:
        if self.pods is not None:
            await self.pods.close()
        await self.registration.shutdown()
        if self.addresses is not None:
            await self.addresses.close()
