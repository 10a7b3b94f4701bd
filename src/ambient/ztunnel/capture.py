"""In-pod mode (``ambient up --netns``): ztunnel's listeners inside each enrolled pod's namespace.

As Istio's in-pod redirection: the node agent (istio-cni's job, here
``ambient.nodeagent``) gives ztunnel each local pod's network namespace; one
ztunnel per node opens, *inside* every enrolled pod's namespace,

- ``127.0.0.1:15001`` outbound capture: every TCP connection the pod makes,
  redirected by nftables; the original destination (``SO_ORIGINAL_DST``) is
  handed to the same outbound path as a SOCKS5 request (VIP → endpoint,
  enrolled destination → HBONE with the pod's certificate, else plain TCP);
- ``<podIP>:15006`` inbound plaintext capture: connections that arrive
  without HBONE. They have no identity, so the destination's L4 policy decides
  on them as plaintext: PERMISSIVE (or no PeerAuthentication) allows, STRICT
  refuses, an ALLOW policy naming principals refuses;
- ``<podIP>:15008`` HBONE inbound;
- ``127.0.0.1:15053`` (UDP and TCP) the DNS proxy (``ambient.ztunnel.dns``);
  the pod's DNS queries to port 53 are redirected there.

(The listeners are built by ``ztunnel.listeners``, the plaintext on 15006 served
by ``ztunnel.plaintext``.) Only then does the node agent install the redirection (``nodeagent.redirection``),
so no connection is ever redirected to a port nobody listens on. Leaving the
mesh runs the other way: rules first, then listeners. Connections already
open are never cut by either: conntrack keeps each one on the path it started
on (it runs in the pod's namespace from its creation, whether redirection is
on or off: see ``nodeagent.redirection``), and accepted sockets outlive their
listener.

Decisions:

- ztunnel's own sockets in a pod's namespace carry mark ``0x539`` (Istio's),
  which the rules exempt; the kernel keeps a socket in the namespace it was
  created in, so a :class:`~ambient.netns.NetnsThread` creates
  them and the event loop uses them.
- HBONE client connections start in the *source* pod's namespace (as Istio):
  their source address is the pod's, and they leave through the pod's link.
- The application sees its caller's address, as with Istio's in-pod mode: the
  connection ztunnel makes to it, from inside the destination pod's namespace,
  is bound to the caller's pod IP (``IP_TRANSPARENT``; the address in
  ``forwarded: for=`` when the tunnel came through a waypoint). Its packets
  carry ztunnel's mark, which the pod's ``spoof_pre`` chain copies into the
  connection as ``0x111``; ``spoof_out`` puts that mark back on the
  application's replies, and the pod's policy route (``fwmark 0x111/0xfff
  lookup 100``, table 100 ``local 0.0.0.0/0 dev lo``) delivers them locally to
  ztunnel's socket instead of sending them out of ``eth0`` to the real caller
  (who never opened that connection). Both chains and the route stay whether
  redirection is on or off, so leaving the mesh never strands an open
  connection's replies. Loopback and IPv6 callers are not spoofed (the
  application then sees its own address). Pods with
  ``ambient.io/application-tunnel: PROXY`` also receive the caller in a PROXY
  v2 header, with its port and identity.
- Leaving the mesh removes the rules at once but closes the in-pod listeners
  only :data:`UNENROL_GRACE` seconds later: a connection redirected an instant
  before the rules went can still be in a listener's accept queue (closing the
  listener would reset it), and DNS replies may still be owed.
- Enrolment race: a peer ztunnel may learn that a pod is enrolled a moment
  before that pod's HBONE listener exists. An HBONE dial refused with
  ECONNREFUSED is retried for up to :data:`ENROL_RETRY` seconds (Istio avoids
  the race by publishing a pod as HBONE only after istio-cni annotated it;
  our control plane does not wait). When a pod leaves the mesh its HBONE
  listener also stays open :data:`UNENROL_GRACE` seconds for peers that have not
  heard yet (mTLS, so this never weakens anything).
- Hair-pinning (Istio's inbound passthrough before 1.22): plaintext for a pod
  that has a waypoint came from outside the mesh and so missed the waypoint's
  L7 policy. Under PERMISSIVE it is sent through the waypoint over HBONE
  (``plaintext.waypoint_target`` says which waypoint and which address it is told),
  and comes back to the pod's 15008 from the waypoint; ztunnel's own L4 policy
  is then applied to that hop (its source is the waypoint), as for mesh
  traffic. Under STRICT it is refused as any plaintext. The tunnel to the
  waypoint carries the destination pod's identity (the only one this ztunnel
  holds for it; an out-of-mesh client has none, and may run on another node)
  and the real client in ``forwarded: for=``, so the waypoint's access log and
  ``remoteIpBlocks`` see the caller. As that address is not a workload of the
  destination's identity, the waypoint grants the connection no peer identity
  at all (``waypoint.proxy.caller``): the outside caller never
  passes for the destination's service account or namespace in a policy.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any, Protocol

from ambient.hbone.messages import HBONE_PORT
from ambient.netns import NetnsError, NetnsThread
from ambient.state.workload import TunnelProtocol, Workload
from ambient.ztunnel.dial import Dialer
from ambient.ztunnel.inputs import ProxyInputs
from ambient.ztunnel.listeners import PodListeners
from ambient.ztunnel.outbound import OutboundHandler

__all__ = ["ENROL_RETRY", "UNENROL_GRACE", "InPodProxy", "PodNamespaces", "PodNetworks"]

log = logging.getLogger("ambient.ztunnel")

ENROL_RETRY = 5.0
UNENROL_GRACE = 5.0


def spoofable(source: str | None) -> str | None:
    """The caller address to connect to an application from, or None to use the pod's own
    (IPv4 callers only; a loopback or unspecified address cannot be a caller's)."""
    if source is None:
        return None
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return None
    if ip.version != 4 or ip.is_loopback or ip.is_unspecified:
        return None
    return source


class PodNetworks(Protocol):
    """What the node agent offers ztunnel (istio-cni → ztunnel in Istio)."""

    def netns_of(self, workload: Workload) -> NetnsThread | None:
        """The pod's namespace, or None while it does not exist (yet)."""

    async def set_redirection(self, workload: Workload, enabled: bool) -> None:
        """Install or remove the pod's redirection rules (``nodeagent.redirection``)."""


class PodNamespaces:
    """The namespaces of the local pods by address: where a pod's connections start."""

    def __init__(self) -> None:
        self._by_ip: dict[str, NetnsThread] = {}

    def add(self, ip: str, netns: NetnsThread) -> None:
        self._by_ip[ip] = netns

    def remove(self, ip: str) -> None:
        self._by_ip.pop(ip, None)

    async def dial(self, host: str, port: int, source_ip: str | None) -> socket.socket:
        """A connection from the source pod's namespace (the dialer of the HBONE pool and of
        outbound plain TCP). An HBONE dial refused is retried for :data:`ENROL_RETRY`."""
        netns = self._by_ip.get(source_ip or "")
        if netns is None:
            raise OSError(errno.ENETUNREACH, f"no local pod namespace for source {source_ip}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (ENROL_RETRY if port == HBONE_PORT else 0)
        while True:
            try:
                return await netns.dial(host, port)
            except ConnectionRefusedError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.05)


@dataclass
class _InPod:
    """ztunnel's listeners in one pod's namespace, and where its redirection stands."""

    listeners: PodListeners
    netns: NetnsThread
    redirected: bool | None = None
    """Whether its redirection is on; None until ztunnel first decides (the node agent may
    have installed it already, as for a pod the CNI plugin reported enrolled)."""
    grace: asyncio.TimerHandle | None = None

    @property
    def workload(self) -> Workload:
        return self.listeners.workload


class InPodProxy:
    """One node's ztunnel serving its pods from inside their namespaces."""

    def __init__(
        self, inputs: ProxyInputs, networks: PodNetworks, namespaces: PodNamespaces
    ) -> None:
        self.inputs = inputs
        self.networks = networks
        self.namespaces = namespaces
        self._pods: dict[str, _InPod] = {}

    # -- following the state ---------------------------------------------------------------

    async def reconcile(self, wanted: dict[str, Workload]) -> None:
        for uid in [u for u in self._pods if u not in wanted]:
            await self._remove(self._pods.pop(uid))
        for uid, workload in wanted.items():
            pod = self._pods.get(uid)
            if pod is not None and pod.workload.addresses != workload.addresses:
                await self._remove(self._pods.pop(uid))
                pod = None
            if pod is None:
                netns = self.networks.netns_of(workload)
                if netns is None:
                    continue  # the node agent has not made its namespace yet; it will ask again
                pod = self._pods[uid] = self._new_pod(workload, netns)
                self.namespaces.add(str(workload.addresses[0]), netns)
            pod.listeners.workload = workload
            try:
                if workload.tunnel_protocol is TunnelProtocol.HBONE:
                    await self._enrol(pod)
                else:
                    await self._unenrol(pod)
            except (OSError, NetnsError) as exc:
                log.error(
                    "ztunnel %s: in-pod setup for %s/%s failed: %s",
                    self.inputs.node,
                    workload.namespace,
                    workload.name,
                    exc,
                )

    def _new_pod(self, workload: Workload, netns: NetnsThread) -> _InPod:
        outbound = OutboundHandler(self.inputs, workload.uid, Dialer(self.namespaces.dial))

        async def as_caller(host: str, port: int, source: str | None) -> socket.socket:
            return await netns.dial(host, port, source=spoofable(source))

        listeners = PodListeners(self.inputs, workload, netns, outbound, Dialer(as_caller))
        return _InPod(listeners, netns)

    async def _enrol(self, pod: _InPod) -> None:
        if pod.grace is not None:
            pod.grace.cancel()
            pod.grace = None
        if pod.redirected and pod.listeners.hbone is not None:
            return
        workload = pod.workload
        await pod.listeners.open_hbone()
        await pod.listeners.open_capture()
        if not pod.redirected:
            await self.networks.set_redirection(workload, True)
            pod.redirected = True
        log.info(
            "ztunnel %s: %s/%s enrolled in %s (in-pod :15001 :15006 :15008 :15053, %s)",
            self.inputs.node,
            workload.namespace,
            workload.name,
            pod.netns.name,
            workload.identity,
        )

    async def _unenrol(self, pod: _InPod) -> None:
        was_on = pod.redirected
        if pod.redirected is not False:
            await self.networks.set_redirection(pod.workload, False)
            pod.redirected = False
        if was_on:
            log.info(
                "ztunnel %s: %s/%s left the mesh; redirection removed",
                self.inputs.node,
                pod.workload.namespace,
                pod.workload.name,
            )
        # The capture listeners stay open for the grace period too: a connection redirected
        # just before the rules went may still sit in a listener's accept queue, and closing
        # the listener would reset it. Accepted now, it is served as the state says (plain TCP).
        listeners = pod.listeners
        if pod.grace is None and (listeners.hbone is not None or listeners.capture_out is not None):
            loop = asyncio.get_running_loop()
            pod.grace = loop.call_later(
                UNENROL_GRACE, lambda: asyncio.ensure_future(self._end_grace(pod))
            )

    async def _end_grace(self, pod: _InPod) -> None:
        pod.grace = None
        if pod.workload.tunnel_protocol is TunnelProtocol.HBONE:
            return  # enrolled again meanwhile
        pod.listeners.close_capture()
        await pod.listeners.close_hbone()  # open tunnels drain on their own

    async def _remove(self, pod: _InPod, *, drain: bool = True) -> None:
        if pod.grace is not None:
            pod.grace.cancel()
        self.namespaces.remove(str(pod.workload.addresses[0]))
        await pod.listeners.close(drain=drain)
        pod.netns.close()

    async def close(self) -> None:
        for pod in list(self._pods.values()):
            await self._remove(pod, drain=False)
        self._pods.clear()

    def listeners(self) -> dict[str, dict[str, Any]]:
        """Per pod, which in-pod listeners are open (for ``/config_dump``)."""
        return {
            uid: {
                "netns": p.netns.name,
                "redirected": bool(p.redirected),
                "outbound15001": p.listeners.capture_out is not None,
                "inbound15006": p.listeners.capture_in is not None,
                "hbone15008": p.listeners.hbone is not None,
                "dns15053": p.listeners.dns is not None,
                "dnsTcp15053": p.listeners.dns_tcp is not None,
            }
            for uid, p in sorted(self._pods.items())
        }
