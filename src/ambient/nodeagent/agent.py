"""The node agent of ``ambient up --netns``: namespaces, links, routes and redirection rules.

It does what istio-cni and the cluster's network plugin do on Kubernetes:

- **Topology.** A *fabric* namespace holds a bridge ``br0``; every node is a
  namespace linked to it by a veth (``eth0`` on the node side, address
  ``10.243.0.N/24``, N taken from the node's ``127.1.0.N``). Every pod is a
  namespace with one veth ``eth0`` to its node, its address as a ``/32`` and a
  default route via ``169.254.1.1`` (the node side of every pod link, as
  Calico does). Nodes route each pod with a host route: their own pods via the
  pod's link, other nodes' pods via that node's fabric address. So all of a
  pod's traffic passes through its node, and traffic between nodes crosses the
  node links (``eth0`` in each node namespace).
- **Addresses** (decided here, not by the manifests' loopback defaults): pods
  from ``10.244.0.0/16``, Service VIPs from ``10.96.0.0/16``.
- **Services for pods outside the mesh** (kube-proxy's job): each node
  namespace DNATs VIP:port to a random healthy endpoint (nftables
  ``table ip ambient_services``); each node answers DNS (UDP and TCP) on
  ``169.254.1.1:53`` with the mesh's names, and every pod's ``resolv.conf``
  (``/etc/netns/<pod namespace>/resolv.conf``, which the pod launcher mounts
  as ``ip netns exec`` does) points there with Kubernetes' search list. Enrolled pods never use
  either: ztunnel captures their connections and DNS in the pod.
- **Redirection** (istio-cni's job): every pod namespace has
  ``table inet ambient`` with its NAT chains from the start, without
  redirects but with a rule that keeps conntrack on (so it follows every
  connection from its first packet); ztunnel asks, once its in-pod listeners
  are open, and the agent adds the redirects
  (``ambient.nodeagent.redirection``), or removes them again.
- **Names** start with the mesh prefix (``ambient.netns.mesh_prefix``):
  ``<prefix>-fabric``, ``<prefix>-node.<node>``, ``<prefix>-pod.<ns>.<pod>``.
  Interfaces live only inside these namespaces, so deleting the namespaces
  removes every link, route and rule; :func:`cleanup` does that (and kills
  processes left in them) for ``ambient down`` and for a restart after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ambient import netns as ns
from ambient.controlplane.allocate import AddressAllocator
from ambient.netns import NetnsThread
from ambient.nodeagent.podsocket import PodSocketServer
from ambient.nodeagent.redirection import redirection_rules
from ambient.state.proxy import ProxyState
from ambient.state.workload import Service, Workload, WorkloadStatus
from ambient.ztunnel.dns import DnsProtocol, DnsTcpProtocol, client_namespace_resolver

log = logging.getLogger("ambient.nodeagent")

POD_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
FABRIC_CIDR = ipaddress.IPv4Network("10.243.0.0/24")
GATEWAY = "169.254.1.1"
NODE_LINK = "eth0"
SERVICES_TABLE = "ambient_services"
STATE_FILE = "netns.json"


def netns_allocator(state_root: Path) -> AddressAllocator:
    """Pods and Services get routable addresses (their own file: loopback runs keep theirs)."""
    return AddressAllocator(
        Path(state_root) / "addresses-netns.json",
        pools={"Pod": POD_CIDR, "Service": SERVICE_CIDR, "Node": "127.1.0.0/24"},
    )


@dataclass
class NodeNet:
    name: str
    netns: str
    fabric_ip: str
    state: ProxyState
    thread: NetnsThread
    dns: asyncio.DatagramTransport | None = None
    dns_tcp: asyncio.Server | None = None
    services_rules: str = ""


@dataclass
class PodNet:
    namespace: str
    name: str
    node: str
    ip: str
    netns: str
    host_if: str
    thread: NetnsThread
    inode: int
    adopted: bool = False
    """Its namespace is a container runtime's (the CNI plugin's pods): never deleted here."""
    uid: str = ""
    redirected: bool = False


class NodeAgent:
    """All nodes' agents of one ``ambient up --netns``, in its process; ztunnels in other
    processes reach theirs through :meth:`serve_ztunnel` (``ambient.nodeagent.podsocket``)."""

    def __init__(self, state_root: Path) -> None:
        self.state_root = Path(state_root)
        self.prefix = ns.mesh_prefix(self.state_root)
        self.fabric = f"{self.prefix}-fabric"
        self.nodes: dict[str, NodeNet] = {}
        self._pods: dict[str, PodNet] = {}  # by pod IP
        self._service_syncs: dict[str, asyncio.Task[None]] = {}
        self._resync: set[str] = set()
        self._sockets: dict[str, PodSocketServer] = {}  # ztunnel processes' channels, by node
        self.pod_cidr = POD_CIDR
        self.on_served: Callable[[PodNet, bool], Awaitable[None]] | None = None
        """Called when a ztunnel starts or stops serving a runtime's pod (see :meth:`served`)."""

    # -- names -------------------------------------------------------------------------

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}-node.{node}"

    def pod_netns(self, namespace: str, name: str) -> str:
        return f"{self.prefix}-pod.{namespace}.{name}"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Remove what a crashed run left, then make the fabric."""
        problem = ns.missing_capability()
        if problem is not None:
            raise ns.NetnsError(problem)
        removed = await asyncio.to_thread(cleanup, self.prefix)
        if removed:
            log.warning("removed %d namespace(s) left by a previous run", len(removed))
        (self.state_root / STATE_FILE).write_text(json.dumps({"prefix": self.prefix}) + "\n")
        await asyncio.to_thread(self._make_fabric)

    def _make_fabric(self) -> None:
        ns.add_netns(self.fabric)
        ns.ip("link", "add", "br0", "type", "bridge", netns=self.fabric)
        ns.ip("link", "set", "br0", "up", netns=self.fabric)

    async def close(self) -> None:
        for server in self._sockets.values():
            await server.close()
        self._sockets.clear()
        for task in self._service_syncs.values():
            task.cancel()
        for node in self.nodes.values():
            if node.dns is not None:
                node.dns.close()
            if node.dns_tcp is not None:
                node.dns_tcp.close()
            node.thread.close()
        for pod in self._pods.values():
            pod.thread.close()
        self.nodes.clear()
        self._pods.clear()
        await asyncio.to_thread(cleanup, self.prefix)

    # -- nodes -------------------------------------------------------------------------

    async def add_node(self, name: str, node_ip: str, state: ProxyState) -> NodeNet:
        """The node's namespace, its fabric link, its DNS and service rules."""
        index = int(ipaddress.IPv4Address(node_ip)) & 0xFF
        fabric_ip = str(FABRIC_CIDR.network_address + index)
        netns = self.node_netns(name)
        await asyncio.to_thread(self._make_node, netns, index, fabric_ip)
        node = NodeNet(name, netns, fabric_ip, state, NetnsThread(netns))
        self.nodes[name] = node
        sock = await node.thread.bind_udp("0.0.0.0", 53)
        loop = asyncio.get_running_loop()
        node.dns, _ = await loop.create_datagram_endpoint(
            lambda: DnsProtocol(lambda client: client_namespace_resolver(state, client)), sock=sock
        )
        node.dns_tcp = await loop.create_server(
            lambda: DnsTcpProtocol(lambda client: client_namespace_resolver(state, client)),
            sock=await node.thread.listen_tcp("0.0.0.0", 53),
        )
        state.on_change(lambda _: self._request_services_sync(name))
        self._request_services_sync(name)
        routes = [(pod.ip, pod) for pod in self._pods.values()]
        await asyncio.to_thread(self._route_pods_on, node, routes)
        log.info("node %s: namespace %s, fabric address %s", name, netns, fabric_ip)
        return node

    def _make_node(self, netns: str, index: int, fabric_ip: str) -> None:
        ns.add_netns(netns)
        port = f"n{index}"
        ns.ip("link", "add", port, "type", "veth", "peer", "name", NODE_LINK, "netns", netns,
              netns=self.fabric)  # fmt: skip
        ns.ip("link", "set", port, "master", "br0", "up", netns=self.fabric)
        ns.ip("addr", "add", f"{fabric_ip}/{FABRIC_CIDR.prefixlen}", "dev", NODE_LINK, netns=netns)
        ns.ip("link", "set", NODE_LINK, "up", netns=netns)
        ns.sysctl(
            netns,
            net__ipv4__ip_forward="1",
            net__ipv4__conf__all__rp_filter="0",
            net__ipv4__conf__default__rp_filter="0",
        )

    def _route_pods_on(self, node: NodeNet, pods: Iterable[tuple[str, PodNet]]) -> None:
        for ip, pod in pods:
            if pod.node == node.name:
                continue  # its own pods are routed when their link is made
            owner = self.nodes.get(pod.node)
            if owner is not None:
                ns.ip("route", "replace", f"{ip}/32", "via", owner.fabric_ip, netns=node.netns)

    # -- pods --------------------------------------------------------------------------

    async def add_pod(self, namespace: str, name: str, node: str, ip: str) -> str:
        """The pod's namespace, linked to its node and routed from every node; returns its name."""
        if ip in self._pods:
            return self._pods[ip].netns
        owner = self.nodes.get(node)
        if owner is None:  # ambient node-agent: only the container runtime makes sandboxes
            raise ns.NetnsError(
                f"pod {namespace}/{name} ({ip}) has no network namespace on node {node}: "
                "the container runtime has not reported its sandbox (CNI ADD) yet"
            )
        netns = self.pod_netns(namespace, name)
        host_if = "v" + hashlib.sha256(netns.encode()).hexdigest()[:10]
        others = [n for n in self.nodes.values() if n.name != node]
        await asyncio.to_thread(self._make_pod, owner, netns, host_if, ip, namespace, others)
        inode = ns.netns_inode(netns)
        thread = NetnsThread(netns, inode=inode)
        self._pods[ip] = PodNet(namespace, name, node, ip, netns, host_if, thread, inode)
        self._pods_changed(node)
        return netns

    def _make_pod(
        self,
        owner: NodeNet,
        netns: str,
        host_if: str,
        ip: str,
        namespace: str,
        others: list[NodeNet],
    ) -> None:
        ns.delete_netns(netns)  # a pod restarted under the same name starts clean
        ns.add_netns(netns)
        node = owner.netns
        ns.ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns,
              netns=node)  # fmt: skip
        ns.ip("addr", "add", f"{GATEWAY}/32", "dev", host_if, netns=node)
        ns.ip("link", "set", host_if, "up", netns=node)
        ns.ip("route", "replace", f"{ip}/32", "dev", host_if, netns=node)
        ns.ip("addr", "add", f"{ip}/32", "dev", "eth0", netns=netns)
        ns.ip("link", "set", "eth0", "up", netns=netns)
        ns.ip("route", "add", GATEWAY, "dev", "eth0", "scope", "link", netns=netns)
        ns.ip("route", "add", "default", "via", GATEWAY, "dev", "eth0", netns=netns)
        prepare_pod_netns(netns, redirect=False)
        for other in others:
            ns.ip("route", "replace", f"{ip}/32", "via", owner.fabric_ip, netns=other.netns)
        etc = ns.NETNS_ETC_DIR / netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(
            f"# ambient --netns: the node's DNS; ztunnel answers instead while the pod is enrolled\n"
            f"nameserver {GATEWAY}\n"
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5 timeout:2 attempts:2\n"
        )

    async def adopt_pod(
        self,
        node: str,
        namespace: str,
        name: str,
        uid: str,
        ip: str,
        netns: str,
        inode: int,
        redirect: bool,
    ) -> None:
        """Serve a pod whose namespace (the path ``netns``) a container runtime made: its
        policy routing and NAT chains, the redirection too if ``redirect`` (an enrolled
        pod, before its first packet), then its node's ztunnel is told (CNI ``ADD``)."""
        old = self._pods.get(ip)
        if old is not None and (old.netns, old.inode) != (netns, inode):
            # The address's previous pod is gone (a new sandbox got it).
            if old.adopted:
                self.forget_pod(ip)
            else:
                await self.remove_pod(ip)
        await asyncio.to_thread(prepare_pod_netns, netns, redirect=redirect)
        self._pods[ip] = PodNet(
            namespace, name, node, ip, netns, "", NetnsThread(netns, inode=inode), inode,
            adopted=True, uid=uid, redirected=redirect,
        )  # fmt: skip
        self._pods_changed(node)
        log.info(
            "%s/%s (%s) on %s: namespace %s adopted%s",
            namespace,
            name,
            ip,
            node,
            netns,
            ", redirection installed" if redirect else "",
        )

    def pod(self, ip: str) -> PodNet | None:
        return self._pods.get(ip)

    def forget_pod(self, ip: str) -> PodNet | None:
        """Stop serving the pod at ``ip`` (its node's ztunnel is told); its namespace stays."""
        pod = self._pods.pop(ip, None)
        if pod is not None:
            pod.thread.close()
            self._pods_changed(pod.node)
        return pod

    async def remove_pod(self, ip: str) -> None:
        """Remove the pod at ``ip`` with its namespace and routes, if this agent made them.
        An adopted pod is left alone: its namespace is the runtime's, and it is forgotten
        when that goes (``ambient.nodeagent.cnipods``)."""
        pod = self._pods.get(ip)
        if pod is None or pod.adopted:
            return
        self.forget_pod(ip)
        nodes = list(self.nodes.values())

        def remove() -> None:
            ns.delete_netns(pod.netns)
            for node in nodes:
                ns.ip("route", "del", f"{ip}/32", netns=node.netns, check=False)

        await asyncio.to_thread(remove)

    def pods_on(self, node: str) -> dict[str, dict[str, object]]:
        """The node's pods: address → namespace name and inode (what its ztunnel is told)."""
        return {
            ip: {"netns": p.netns, "inode": p.inode, "namespace": p.namespace, "name": p.name}
            for ip, p in sorted(self._pods.items())
            if p.node == node
        }

    async def serve_ztunnel(self, node: str, path: Path) -> None:
        """Serve ``node``'s ztunnel process on the Unix socket ``path`` (``podsocket``)."""
        server = PodSocketServer(self, node)
        await server.start(path)
        self._sockets[node] = server

    def _pods_changed(self, node: str) -> None:
        server = self._sockets.get(node)
        if server is not None:
            server.pods_changed()

    def pod_thread(self, ip: str) -> NetnsThread | None:
        """The thread inside the namespace of the pod at ``ip`` (sockets made there)."""
        pod = self._pods.get(ip)
        return pod.thread if pod else None

    def netns_name(self, ip: str) -> str | None:
        pod = self._pods.get(ip)
        return pod.netns if pod else None

    async def ports_open(self, ip: str, ports: Iterable[int]) -> bool:
        """Whether the pod at ``ip`` accepts on every port (probed from inside its namespace)."""
        pod = self._pods.get(ip)
        if pod is None:
            return False
        for port in ports:
            try:
                sock = await asyncio.wait_for(pod.thread.dial(ip, port), 1.0)
            except (OSError, TimeoutError):
                return False
            sock.close()
        return True

    # -- PodNetworks (what ztunnel asks of us) ---------------------------------------------

    def netns_of(self, workload: Workload) -> NetnsThread | None:
        if not workload.addresses:
            return None
        pod = self._pods.get(str(workload.addresses[0]))
        return pod.thread if pod else None

    async def set_redirection(self, workload: Workload, enabled: bool) -> None:
        if workload.addresses:
            await self.set_redirection_ip(str(workload.addresses[0]), enabled)

    async def set_redirection_ip(self, ip: str, enabled: bool) -> None:
        """Install or remove the redirection of the pod at ``ip`` (a no-op if none is)."""
        pod = self._pods.get(ip)
        if pod is None or pod.redirected == enabled:
            return
        await asyncio.to_thread(ns.nft, redirection_rules(enabled), netns=pod.netns)
        pod.redirected = enabled
        log.info(
            "%s/%s: redirection %s (table inet ambient in %s)",
            pod.namespace,
            pod.name,
            "installed" if enabled else "removed",
            pod.netns,
        )

    async def served(self, ip: str, enabled: bool) -> None:
        """The node's ztunnel asked for the redirection of the pod at ``ip`` on (its in-pod
        listeners are open: it serves the pod) or off: tell :attr:`on_served`, for pods a
        container runtime made (``ambient node-agent`` annotates them, as istio-cni)."""
        pod = self._pods.get(ip)
        if pod is not None and pod.adopted and self.on_served is not None:
            await self.on_served(pod, enabled)

    # -- services for pods outside the mesh (kube-proxy's job) --------------------------------

    def _request_services_sync(self, node: str) -> None:
        task = self._service_syncs.get(node)
        if task is not None and not task.done():
            self._resync.add(node)
            return
        self._service_syncs[node] = asyncio.ensure_future(self._sync_services(node))

    async def _sync_services(self, name: str) -> None:
        while True:
            self._resync.discard(name)
            node = self.nodes.get(name)
            if node is None:
                return
            script = service_rules(node.state.services.values(), node.state)
            if script != node.services_rules:
                try:
                    await asyncio.to_thread(ns.nft, script, netns=node.netns)
                    node.services_rules = script
                except ns.NetnsError as exc:
                    log.error("node %s: service rules failed: %s", name, exc)
            if name not in self._resync:
                return


def prepare_pod_netns(netns: str, *, redirect: bool) -> None:
    """What every pod's namespace needs before its first connection (links and addresses
    aside): the policy route that hands replies marked ``0x111`` to ztunnel (it connects
    to the application as the caller, ``ambient.ztunnel.capture``), ``rp_filter`` off,
    and ``table inet ambient`` with its NAT chains — redirecting only if ``redirect``.

    The chains exist from the start so that conntrack tracks every connection from its
    first packet, and enrolling later never mistakes a packet of an open connection for a
    new one to redirect. Idempotent: an agent that restarts applies it again."""
    mark, table = f"{ns.SPOOF_MARK:#x}/0xfff", str(ns.SPOOF_TABLE)
    ns.ip("rule", "del", "fwmark", mark, "lookup", table, netns=netns, check=False)
    ns.ip("rule", "add", "fwmark", mark, "lookup", table, netns=netns)
    ns.ip("route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", table, netns=netns)
    ns.sysctl(
        netns,
        net__ipv4__conf__all__rp_filter="0",
        net__ipv4__conf__default__rp_filter="0",
        net__ipv4__conf__lo__rp_filter="0",
    )
    ns.nft(redirection_rules(redirect), netns=netns)


def service_rules(services: Iterable[Service], state: ProxyState) -> str:
    """``table ip ambient_services``: DNAT each VIP:port to a random healthy endpoint."""
    lines = [
        f"table ip {SERVICES_TABLE}",
        f"flush table ip {SERVICES_TABLE}",  # not delete: the NAT hook must stay registered
        f"table ip {SERVICES_TABLE} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
    ]
    chains: list[str] = []
    for service in sorted(services, key=lambda s: s.key):
        vips = [a for a in service.addresses if a.version == 4]
        if not vips:
            continue
        healthy = [
            w
            for w in state.endpoints(service)
            if w.status is WorkloadStatus.HEALTHY and w.addresses and w.addresses[0].version == 4
        ]
        for port in service.ports:
            chain = f"svc{len(chains)}"
            targets = []
            for w in healthy:
                target = _endpoint_port(w, service, port.service_port, port.target_port)
                targets.append(f"{w.addresses[0]}:{target}")
            for vip in vips:
                lines.append(f"    ip daddr {vip} tcp dport {port.service_port} goto {chain}")
            chains.append(_endpoint_chain(chain, targets))
    lines += ["  }", *chains, "}", ""]
    return "\n".join(lines)


def _endpoint_port(w: Workload, service: Service, service_port: int, target: int) -> int:
    for p in w.services.get(service.key, ()):
        if p.service_port == service_port and p.target_port:
            return p.target_port
    return target or service_port


def _endpoint_chain(chain: str, targets: list[str]) -> str:
    if not targets:
        return f"  chain {chain} {{\n    reject with tcp reset\n  }}"
    if len(targets) == 1:
        return f"  chain {chain} {{\n    meta l4proto tcp dnat to {targets[0]}\n  }}"
    subs = [
        f"  chain {chain}_{i} {{\n    meta l4proto tcp dnat to {t}\n  }}"
        for i, t in enumerate(targets)
    ]
    vmap = ", ".join(f"{i} : goto {chain}_{i}" for i in range(len(targets)))
    head = f"  chain {chain} {{\n    numgen random mod {len(targets)} vmap {{ {vmap} }}\n  }}"
    return "\n".join([head, *subs])


# -- cleanup (ambient down) ---------------------------------------------------------------


def cleanup(prefix: str) -> list[str]:
    """Kill processes left in the mesh's namespaces and delete them; returns their names."""
    names = [n for n in ns.list_netns() if n.startswith(prefix + "-")]
    for name in names:
        out = ns.ip("netns", "pids", name, check=False)
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for name in names:
        ns.delete_netns(name)
    if ns.NETNS_ETC_DIR.is_dir():
        for leftover in ns.NETNS_ETC_DIR.glob(prefix + "-*"):
            ns.delete_netns(leftover.name)
    return names


def leftovers(prefix: str) -> Mapping[str, list[str]]:
    """What of the mesh still exists: namespaces and ``/etc/netns`` folders (for checks)."""
    etc = (
        sorted(p.name for p in ns.NETNS_ETC_DIR.glob(prefix + "-*"))
        if ns.NETNS_ETC_DIR.is_dir()
        else []
    )
    return {"netns": [n for n in ns.list_netns() if n.startswith(prefix + "-")], "etc": etc}
