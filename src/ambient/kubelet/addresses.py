"""Pod addresses: a node's IPAM over its ``spec.podCIDR``, and where the addresses live.

**IPAM** (``PodCidr``, as the ``host-local`` CNI plugin): a pod gets the next free
address of its node's ``podCIDR`` after the last one given out, wrapping around
(host-local's round robin), from the third address on (the network address and the
first host address, a bridge's gateway by convention, are never given out; nor is
the broadcast address). So a freed address is not handed out again at once: whatever
still points at a deleted pod's address (a pooled connection, a cached endpoint)
does not reach its successor. A pod that already has an address of the range in its
status (this kubelet restarted) keeps it if it is free, and the round robin goes on
after the highest such address. Nothing is stored on the host: the pods' statuses
are the record.

**Without network namespaces** (``HostAddresses``), every pod address is a ``/32`` on
the host's ``lo`` device, labelled per node (``lo:ak<hash>``, from the cluster and
the node, recorded in the node's state folder so that ``ambient down`` removes what
a crashed run left): the addresses are local to the host, so the pods' processes
bind them and the node's ztunnel listens on them, and they are neither loopback
(127/8) nor link-local addresses (the API server refuses both in EndpointSlices).
(A ``dummy`` interface per node would do as well; ``lo`` needs no kernel module.)
That takes ``CAP_NET_ADMIN`` (root).
Without it a pod gets the loopback twin of its address (``10.244.1.7`` →
``127.244.1.7``: 127 in place of the first octet): the mesh works (it routes by
the pods' addresses from their statuses), but the API server refuses EndpointSlices
with loopback addresses, so Services get none and tools that read EndpointSlices
see no endpoints; ``ambient up`` says so at start.

**Between hosts** (``PodRoutes``, flannel's ``host-gw``): for every other Node whose
``InternalIP`` is not an address of this host, a route to its ``podCIDR`` via that
address; so a ztunnel reaches a remote pod's ``15008`` directly (the hosts share a
link). Nodes of this host need none: their addresses are local.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from ambient import netns as ns

__all__ = [
    "HostAddresses",
    "PodCidr",
    "PodRoutes",
    "can_add_addresses",
    "interface_name",
    "is_local_address",
    "remove_recorded",
]

log = logging.getLogger("ambient.kubelet")

NETWORK_FILE = "network.json"


class PodCidr:
    """Addresses of one node's ``podCIDR`` (see the module docstring)."""

    def __init__(self, cidr: str, *, loopback: bool = False) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        if self.network.version != 4 or self.network.num_addresses < 4:
            raise ValueError(f"podCIDR {cidr}: an IPv4 range of at least 4 addresses is needed")
        self.loopback = loopback
        self._used: dict[str, str] = {}  # address -> pod uid
        self._last = 0  # the last address given out (an int of the range), 0: none yet

    def visible(self, address: ipaddress.IPv4Address) -> str:
        """The address a pod gets for ``address`` of the range (loopback twin if needed)."""
        if not self.loopback:
            return str(address)
        return "127." + str(address).split(".", 1)[1]

    def _candidates(self) -> Iterable[ipaddress.IPv4Address]:
        first = int(self.network.network_address) + 2
        last = int(self.network.broadcast_address) - 1
        for value in range(first, last + 1):
            yield ipaddress.IPv4Address(value)

    def owns(self, address: str) -> bool:
        """Whether ``address`` is one this range gives out."""
        return self._parse(address) is not None

    def _parse(self, address: str) -> ipaddress.IPv4Address | None:
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return None
        if self.loopback:
            if not address.startswith("127."):
                return None
            octets = str(ip).split(".")
            base = str(self.network.network_address).split(".")
            ip = ipaddress.IPv4Address(".".join([base[0], *octets[1:]]))
        if ip not in self.network or ip in (
            self.network.network_address,
            self.network.network_address + 1,
            self.network.broadcast_address,
        ):
            return None
        return ip

    def allocate(self, uid: str, wanted: str = "") -> str:
        """An address for pod ``uid``: ``wanted`` if it is of the range and free."""
        for address, owner in self._used.items():
            if owner == uid:
                return address
        kept = self._parse(wanted) if wanted and wanted not in self._used else None
        if kept is not None:
            self._used[wanted] = uid
            self._last = max(self._last, int(kept))
            return wanted
        candidates = list(self._candidates())
        start = next((i for i, c in enumerate(candidates) if int(c) > self._last), 0)
        for candidate in candidates[start:] + candidates[:start]:
            address = self.visible(candidate)
            if address not in self._used:
                self._used[address] = uid
                self._last = int(candidate)
                return address
        raise RuntimeError(f"podCIDR {self.network} is full ({len(self._used)} pods)")

    def release(self, uid: str) -> None:
        for address in [a for a, owner in self._used.items() if owner == uid]:
            del self._used[address]

    @property
    def used(self) -> Mapping[str, str]:
        return dict(self._used)


def can_add_addresses() -> bool:
    """Whether this process may add addresses to interfaces (root, and ``ip`` exists)."""
    return ns.missing_capability() is None


def interface_name(cluster: str, node: str) -> str:
    """The label of ``node``'s addresses on ``lo`` (``lo:`` + 12: 15 characters at most)."""
    return "lo:ak" + hashlib.sha256(f"{cluster}\0{node}".encode()).hexdigest()[:10]


def _remove_labelled(label: str) -> None:
    out = ns.ip("-o", "-4", "addr", "show", "dev", "lo", "label", label, check=False)
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1]
            ns.ip("addr", "del", address, "dev", "lo", check=False)


def is_local_address(address: str) -> bool:
    """Whether ``address`` is an address of this host (network namespace)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


class HostAddresses:
    """A node's pod addresses on ``lo``, under its label (see the module docstring)."""

    def __init__(self, cluster: str, node: str, node_state: Path) -> None:
        self.node = node
        self.label = interface_name(cluster, node)
        self.record = node_state / NETWORK_FILE
        self._addresses: set[str] = set()

    async def start(self) -> None:
        """Remove what a previous run left under the label, and record the label."""
        await asyncio.to_thread(self._make)

    def _make(self) -> None:
        _remove_labelled(self.label)
        ns.ip("link", "set", "lo", "up")
        self.record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.record.write_text(json.dumps({"label": self.label}) + "\n")

    async def add(self, address: str) -> None:
        if address in self._addresses:
            return
        await asyncio.to_thread(
            ns.ip, "addr", "replace", f"{address}/32", "dev", "lo", "label", self.label
        )
        self._addresses.add(address)

    async def remove(self, address: str) -> None:
        if address not in self._addresses:
            return
        self._addresses.discard(address)
        await asyncio.to_thread(ns.ip, "addr", "del", f"{address}/32", "dev", "lo", check=False)

    async def close(self) -> None:
        """Remove every pod address of the node."""
        await asyncio.to_thread(_remove_labelled, self.label)
        self.record.unlink(missing_ok=True)
        self._addresses.clear()


def remove_recorded(node_state: Path) -> str | None:
    """Remove the addresses a crashed kubelet left for a node (``ambient down``); their label."""
    record = node_state / NETWORK_FILE
    try:
        label = str(json.loads(record.read_text())["label"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if os.geteuid() == 0:
        _remove_labelled(label)
    record.unlink(missing_ok=True)
    return label


class PodRoutes:
    """Routes to other hosts' nodes' pods (see the module docstring)."""

    def __init__(self, local_nodes: Iterable[str]) -> None:
        self.local_nodes = set(local_nodes)
        self._routes: dict[str, str] = {}  # podCIDR -> via

    def wanted(self, nodes: Iterable[Mapping[str, object]]) -> dict[str, str]:
        """The routes ``nodes`` (Node objects) call for: podCIDR -> InternalIP."""
        routes: dict[str, str] = {}
        for node in nodes:
            meta = node.get("metadata") or {}
            spec = node.get("spec") or {}
            status = node.get("status") or {}
            assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
            assert isinstance(status, Mapping)
            if meta.get("name") in self.local_nodes:
                continue
            cidr = spec.get("podCIDR")
            addresses = status.get("addresses") or []
            internal = next(
                (
                    a.get("address")
                    for a in addresses
                    if isinstance(a, Mapping) and a.get("type") == "InternalIP"
                ),
                None,
            )
            local = isinstance(internal, str) and is_local_address(internal)
            if isinstance(cidr, str) and isinstance(internal, str) and cidr and not local:
                routes[cidr] = internal
        return routes

    async def sync(self, nodes: Iterable[Mapping[str, object]]) -> None:
        """Make the routes what ``nodes`` call for."""
        wanted = self.wanted(nodes)
        if wanted == self._routes:
            return
        await asyncio.to_thread(self._apply, wanted)

    def _apply(self, wanted: dict[str, str]) -> None:
        for cidr in [c for c in self._routes if c not in wanted]:
            ns.ip("route", "del", cidr, check=False)
            del self._routes[cidr]
            log.info("route to %s removed", cidr)
        for cidr, via in wanted.items():
            if self._routes.get(cidr) == via:
                continue
            try:
                ns.ip("route", "replace", cidr, "via", via)
            except ns.NetnsError as err:
                log.warning("no route to the pods of %s via %s: %s", cidr, via, err)
                continue
            self._routes[cidr] = via
            log.info("pods of %s routed via %s", cidr, via)

    async def close(self) -> None:
        routes, self._routes = dict(self._routes), {}

        def remove() -> None:
            for cidr in routes:
                with contextlib.suppress(ns.NetnsError):
                    ns.ip("route", "del", cidr, check=False)

        await asyncio.to_thread(remove)
