"""The pod networks a node's kubelet can give its pods (``pods.PodNetwork``).

- ``HostPodNetwork``: no namespaces; each pod's address is on its node's dummy
  interface (``addresses.HostAddresses``), or a loopback address without root. Pods
  reach the mesh through their ztunnel's SOCKS5 and HTTP CONNECT ports
  (``ALL_PROXY``...), as in the folder mode.
- ``NetnsPodNetwork`` (``--netns``): each pod in its own network namespace made by
  the node agent (``ambient.nodeagent``), its traffic captured transparently.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from ambient.kubelet.addresses import HostAddresses
from ambient.kubelet.podspec import KubePod
from ambient.kubelet.probes import Dialer

__all__ = ["HostPodNetwork", "NetnsPodNetwork", "plain_dial"]


async def plain_dial(host: str, port: int) -> socket.socket:
    """A TCP connection from this host's network namespace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class HostPodNetwork:
    """Pod addresses on the host (see the module docstring); ``addresses`` None: loopback."""

    proxies = True

    def __init__(self, addresses: HostAddresses | None) -> None:
        self.addresses = addresses

    async def add_pod(self, pod: KubePod, ip: str) -> str | None:
        if self.addresses is not None:
            await self.addresses.add(ip)
        return None

    async def remove_pod(self, pod: KubePod, ip: str) -> None:
        if self.addresses is not None:
            await self.addresses.remove(ip)

    def dialer(self, pod: KubePod, ip: str) -> Dialer:
        return plain_dial


class NetnsPodNetwork:
    """Pods in network namespaces of the node agent (``NodeAgent``) on node ``node``.

    Here the kubelet plays both the container runtime and the network plugin: it asks
    the node agent for the namespace, its link and address (``add_pod``), and the
    redirection follows the ztunnel's request. On a real node the runtime makes the
    sandbox, the cluster's network plugin its address, and the chained ``ambient-cni``
    plugin (``ambient.cni``) hands it to ``ambient node-agent`` (``CNI_COMMAND=ADD``
    with ``CNI_NETNS`` and ``prevResult``), which adopts it; that path is tested on
    its own (``tests/kube/test_cni.py``), not through this kubelet.
    """

    proxies = False

    def __init__(self, agent: Any, node: str) -> None:
        self.agent = agent
        self.node = node

    async def add_pod(self, pod: KubePod, ip: str) -> str | None:
        name: str = await self.agent.add_pod(pod.namespace, pod.name, self.node, ip)
        return name

    async def remove_pod(self, pod: KubePod, ip: str) -> None:
        await self.agent.remove_pod(ip)

    def dialer(self, pod: KubePod, ip: str) -> Dialer:
        agent = self.agent

        async def dial(host: str, port: int) -> socket.socket:
            thread = agent.pod_thread(ip)
            if thread is None:
                raise OSError(f"pod {pod.namespace}/{pod.name} has no network namespace")
            sock: socket.socket = await thread.dial(host, port)  # marked: never captured
            return sock

        return dial
