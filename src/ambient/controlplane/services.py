"""Services of the index, and which services (on which ports) each workload serves.

Decisions (Istio's, unless noted):

- A Service's hostname is ``<name>.<ns>.svc.cluster.local``; its VIP is
  ``spec.clusterIP`` or an allocated one; a headless Service has none.
- ``Service.ports`` holds the numeric ``targetPort``, or 0 for a named one;
  each workload's ``services`` entry holds its resolved ports. A named
  ``targetPort`` resolves through the pod's container ports (name and
  protocol), or for a WorkloadEntry through its ``ports`` map; a workload
  without it is no endpoint for that port, and no endpoint of the Service at
  all if none of its ports resolve.
- Only TCP ports are indexed: the mesh carries TCP (ours: UDP and SCTP
  Service ports, and UDP ServiceEntry ports, are left out).
- Services select pods and WorkloadEntries of their namespace; an empty
  selector selects nothing. A ServiceEntry's ``workloadSelector`` selects
  likewise (an empty one selects every workload of its namespace, as in Istio).
- A ServiceEntry is one service per host, keyed ``<se namespace>/<host>``,
  addressed by its ``spec.addresses`` (single IPs; wider CIDRs are skipped
  with a warning). A host or address already taken by another service is
  skipped with a warning (Kubernetes Services win; then ServiceEntries by
  namespace and name).
- ServiceEntry ports map to the endpoint's port of the same name, else
  ``targetPort``, else the port number.
- A service port's ``app_protocol`` is istiod's (``controlplane.protocols``);
  the workloads' port lists leave it UNKNOWN, as istiod does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from ambient.config.configset import ConfigSet
from ambient.config.frozen import FrozenMap
from ambient.config.resources import Pod, ServiceEntry
from ambient.config.resources import Service as KubeService
from ambient.controlplane.protocols import kube_port_protocol, service_entry_protocol
from ambient.state.workload import IPAddress, Port, Service

__all__ = ["ServiceRegistry", "entry_ports", "service_hostname"]

ServicePorts = FrozenMap[str, tuple[Port, ...]]


def service_hostname(name: str, namespace: str, domain: str = "cluster.local") -> str:
    """``<name>.<namespace>.svc.<domain>``."""
    return f"{name}.{namespace}.svc.{domain}"


def _kube_tcp_ports(service: KubeService) -> tuple[Port, ...]:
    return tuple(
        Port(
            p.port,
            p.target_port if isinstance(p.target_port, int) else 0,
            kube_port_protocol(p.port, p.name, p.protocol, p.app_protocol),
        )
        for p in service.spec.ports
        if p.protocol == "TCP"
    )


def _pod_ports(service: KubeService, pod: Pod) -> tuple[Port, ...]:
    named = {
        (port.name, port.protocol): port.container_port
        for container in pod.spec.containers
        for port in container.ports
        if port.name
    }
    ports = []
    for p in service.spec.ports:
        if p.protocol != "TCP":
            continue
        if isinstance(p.target_port, int):
            ports.append(Port(p.port, p.target_port))
        elif (target := named.get((p.target_port, p.protocol))) is not None:
            ports.append(Port(p.port, target))
    return tuple(ports)


def _entry_workload_ports(service: KubeService, entry_ports: Mapping[str, int]) -> tuple[Port, ...]:
    ports = []
    for p in service.spec.ports:
        if p.protocol != "TCP":
            continue
        if isinstance(p.target_port, str):
            if p.target_port in entry_ports:
                ports.append(Port(p.port, entry_ports[p.target_port]))
        else:
            ports.append(Port(p.port, entry_ports.get(p.name, p.target_port)))
    return tuple(ports)


def entry_ports(entry: ServiceEntry, workload_ports: Mapping[str, int]) -> tuple[Port, ...]:
    """A ServiceEntry's TCP ports as served by a workload with named ``workload_ports``."""
    return tuple(
        Port(p.number, workload_ports.get(p.name, p.target_port or p.number))
        for p in entry.spec.ports
        if p.protocol.upper() != "UDP"
    )


def _single_address(text: str) -> IPAddress | None:
    network = ipaddress.ip_network(text, strict=False)
    return network.network_address if network.num_addresses == 1 else None


class ServiceRegistry:
    """The services of a configuration, and the selection of workloads into them."""

    def __init__(
        self,
        config: ConfigSet,
        vips: Mapping[tuple[str, str], IPAddress],
        services: Sequence[KubeService] | None = None,
        service_entries: Sequence[ServiceEntry] | None = None,
    ) -> None:
        """``vips``: (namespace, Service name) -> address, for every non-headless Service.

        ``services`` and ``service_entries``: the config's, if the caller has them
        already (sorted by namespace and name).
        """
        self.warnings: list[str] = []
        self.services: dict[str, Service] = {}
        self._kube: dict[str, list[tuple[str, KubeService]]] = {}
        # Selector index: (namespace, one label of the selector) -> the Services that
        # select on it, so a pod is tested only against Services that can select it.
        self._by_label: dict[tuple[str, str, str], list[tuple[int, str, KubeService]]] = {}
        self._entries: dict[str, list[ServiceEntry]] = {}
        taken: dict[IPAddress, str] = {}
        for order, svc in enumerate(config.services() if services is None else services):
            ns, name = svc.meta.namespace, svc.meta.name
            vip = vips.get((ns, name))
            addresses = () if vip is None else (vip,)
            service = Service(name, ns, service_hostname(name, ns), addresses, _kube_tcp_ports(svc))
            self.services[service.key] = service
            taken.update(dict.fromkeys(addresses, service.key))
            if svc.spec.selector:
                self._kube.setdefault(ns, []).append((service.key, svc))
                label, value = min(svc.spec.selector.items())
                self._by_label.setdefault((ns, label, value), []).append((order, service.key, svc))
        entries = config.service_entries() if service_entries is None else service_entries
        for entry in entries:
            self._add_entry(entry, taken)
            if entry.spec.workload_selector is not None:
                self._entries.setdefault(entry.meta.namespace, []).append(entry)

    def _add_entry(self, entry: ServiceEntry, taken: dict[IPAddress, str]) -> None:
        ns, name = entry.meta.namespace, entry.meta.name
        where = f"ServiceEntry {ns}/{name}"
        addresses: list[IPAddress] = []
        for text in entry.spec.addresses:
            address = _single_address(text)
            if address is None:
                self.warnings.append(
                    f"{where}: address range {text} cannot be a service VIP; skipped"
                )
            elif address in taken:
                self.warnings.append(
                    f"{where}: address {address} is already the VIP of {taken[address]}; skipped"
                )
            elif address not in addresses:
                addresses.append(address)
        ports = tuple(
            Port(port.service_port, port.target_port, service_entry_protocol(spec.protocol))
            for port, spec in zip(
                entry_ports(entry, {}),
                (p for p in entry.spec.ports if p.protocol.upper() != "UDP"),
                strict=True,
            )
        )
        for host in entry.spec.hosts:
            service = Service(name, ns, host, tuple(addresses), ports, entry.spec.subject_alt_names)
            if service.key in self.services:
                self.warnings.append(f"{where}: host {host} is already defined; skipped")
                continue
            self.services[service.key] = service
        taken.update(dict.fromkeys(addresses, f"{ns}/{entry.spec.hosts[0]}"))

    def _entry_selection(
        self, namespace: str, labels: Mapping[str, str], workload_ports: Mapping[str, int]
    ) -> dict[str, tuple[Port, ...]]:
        selected: dict[str, tuple[Port, ...]] = {}
        for entry in self._entries.get(namespace, ()):
            selector: Mapping[str, str] = entry.spec.workload_selector or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                ports = entry_ports(entry, workload_ports)
                for host in entry.spec.hosts:
                    selected.setdefault(f"{namespace}/{host}", ports)
        return selected

    def for_pod(self, pod: Pod) -> ServicePorts:
        """The services ``pod`` serves (as ``ns/hostname``) and its ports for each."""
        ns, labels = pod.meta.namespace, pod.meta.labels
        selected: dict[str, tuple[Port, ...]] = {}
        candidates = sorted(
            candidate
            for label, value in labels.items()
            for candidate in self._by_label.get((ns, label, value), ())
        )
        for _, key, svc in candidates:
            if all(labels.get(k) == v for k, v in svc.spec.selector.items()):
                ports = _pod_ports(svc, pod)
                if ports or not self.services[key].ports:
                    selected[key] = ports
        for key, ports in self._entry_selection(ns, labels, {}).items():
            selected.setdefault(key, ports)
        return FrozenMap(sorted(selected.items()))

    def for_workload_entry(
        self, namespace: str, labels: Mapping[str, str], ports: Mapping[str, int]
    ) -> ServicePorts:
        """The services a WorkloadEntry (``labels``, named ``ports``) serves."""
        selected: dict[str, tuple[Port, ...]] = {}
        for key, svc in self._kube.get(namespace, ()):
            if all(labels.get(k) == v for k, v in svc.spec.selector.items()):
                resolved = _entry_workload_ports(svc, ports)
                if resolved or not self.services[key].ports:
                    selected[key] = resolved
        for key, resolved in self._entry_selection(namespace, labels, ports).items():
            selected.setdefault(key, resolved)
        return FrozenMap(sorted(selected.items()))
