"""The ambient index: a ``ConfigSet`` becomes workloads and services (istiod's job for ztunnel).

``build_snapshot`` is pure apart from the address allocator. Decisions:

- Workloads: every pod (declared, or expanded from a Deployment, see
  ``expand``), every WorkloadEntry (``local=False``), and every inline
  ServiceEntry endpoint (``local=False``, type ``workloadentry``). uids are
  Istio's: ``<cluster>//Pod/<ns>/<name>``, ``<cluster>//WorkloadEntry/<ns>/<name>``,
  ``<cluster>//ServiceEntry/<ns>/<se>/<address>``.
- Enrollment: the workload's own ``istio.io/dataplane-mode`` label decides
  when present (``ambient`` enrolls; ``none`` or any other value does not, as
  the config loader warns); otherwise its namespace's label does. Endpoints of
  a ``MESH_EXTERNAL`` ServiceEntry ignore the namespace label (external hosts
  do not speak HBONE) unless labelled themselves.
- A WorkloadEntry's labels are ``spec.labels`` overlaid with
  ``metadata.labels`` (so ``ambient label`` works on it); its node is its
  ``ambient.io/node`` label, else ``""``. A WorkloadEntry or endpoint whose
  address is a hostname gets no address (with a warning).
- Canonical name and revision follow Istio's label precedence.
- ``MeshSnapshot.nodes``: an address for every node that runs a pod.
- Waypoints: Gateways of class ``istio-waypoint`` add their Deployment, Service
  and ServiceAccount, and ``istio.io/use-waypoint`` bindings are resolved last
  (see ``waypoints``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ambient.api.workload import (
    ANNOTATION_APPLICATION_TUNNEL,
    ApplicationTunnel,
    IPAddress,
    TunnelProtocol,
    Workload,
)
from ambient.config.configset import ConfigSet
from ambient.config.frozen import FrozenMap
from ambient.config.resources import LABEL_DATAPLANE_MODE, ServiceEntry, WorkloadEntry
from ambient.controlplane.allocate import AddressAllocator, AllocationKey
from ambient.controlplane.expand import (
    NO_OVERRIDES,
    LabelOverrides,
    ScheduledPod,
    scheduled_pods,
)
from ambient.controlplane.policies import build_policies
from ambient.controlplane.services import ServiceRegistry, entry_ports
from ambient.controlplane.snapshot import MeshSnapshot
from ambient.controlplane.waypoints import bind_waypoints, with_waypoints
from ambient.identity.spiffe import DEFAULT_TRUST_DOMAIN

__all__ = [
    "DEFAULT_CLUSTER_ID",
    "LABEL_NODE",
    "build_snapshot",
    "canonical_name",
    "canonical_revision",
    "tunnel_protocol",
]

DEFAULT_CLUSTER_ID = "Kubernetes"


def pod_uid(namespace: str, name: str, cluster_id: str = DEFAULT_CLUSTER_ID) -> str:
    """A pod's workload uid, as Istio names it: ``<cluster>//Pod/<namespace>/<name>``."""
    return f"{cluster_id}//Pod/{namespace}/{name}"


LABEL_NODE = "ambient.io/node"
_NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")


def canonical_name(labels: Mapping[str, str], workload_name: str) -> str:
    """Istio's canonical service name: the first label present, else the workload name."""
    return next((labels[k] for k in _NAME_LABELS if labels.get(k)), workload_name)


def canonical_revision(labels: Mapping[str, str]) -> str:
    """Istio's canonical revision: the first label present, else ``latest``."""
    return next((labels[k] for k in _REVISION_LABELS if labels.get(k)), "latest")


def tunnel_protocol(
    labels: Mapping[str, str], namespace_labels: Mapping[str, str]
) -> TunnelProtocol:
    """HBONE if the workload is enrolled in ambient mode (see the module docstring)."""
    mode = labels.get(LABEL_DATAPLANE_MODE, namespace_labels.get(LABEL_DATAPLANE_MODE))
    return TunnelProtocol.HBONE if mode == "ambient" else TunnelProtocol.NONE


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _we_labels(entry: WorkloadEntry) -> FrozenMap[str, str]:
    return FrozenMap({**entry.spec.labels, **entry.meta.labels})


def _allocate(
    config: ConfigSet, pods: tuple[ScheduledPod, ...], allocator: AddressAllocator
) -> dict[AllocationKey, IPAddress]:
    explicit: dict[AllocationKey, IPAddress] = {}
    wanted: set[AllocationKey] = set()
    for entry in pods:
        pod = entry.pod
        key = AllocationKey("Pod", pod.meta.namespace, pod.meta.name)
        ip = _ip(pod.status.pod_ip) if pod.status.pod_ip else None
        if ip is None:
            wanted.add(key)
        else:
            explicit[key] = ip
        wanted.add(AllocationKey("Node", "", pod.spec.node_name))
    for svc in config.services():
        if svc.spec.headless:
            continue
        key = AllocationKey("Service", svc.meta.namespace, svc.meta.name)
        ip = _ip(svc.spec.cluster_ip) if svc.spec.cluster_ip else None
        if ip is None:
            wanted.add(key)
        else:
            explicit[key] = ip
    for we in config.workload_entries():
        if (ip := _ip(we.spec.address)) is not None:
            explicit[AllocationKey("WorkloadEntry", we.meta.namespace, we.meta.name)] = ip
    taken: set[IPAddress] = set()
    for se in config.service_entries():
        for text in se.spec.addresses:
            network = ipaddress.ip_network(text, strict=False)
            if network.num_addresses == 1:
                taken.add(network.network_address)
        taken.update(ip for ep in se.spec.endpoints if (ip := _ip(ep.address)) is not None)
    return allocator.sync(explicit, wanted, taken)


class _Builder:
    """Workloads of one snapshot; collects warnings."""

    def __init__(
        self, config: ConfigSet, registry: ServiceRegistry, trust_domain: str, cluster_id: str
    ) -> None:
        self.registry = registry
        self.trust_domain = trust_domain
        self.cluster_id = cluster_id
        self.namespaces = {ns.meta.name: ns.meta.labels for ns in config.namespaces()}
        self.workloads: dict[str, Workload] = {}
        self.warnings: list[str] = []

    def add(self, workload: Workload) -> None:
        if workload.uid in self.workloads:
            self.warnings.append(f"workload {workload.uid} is defined twice; the first is kept")
            return
        self.workloads[workload.uid] = workload

    def pod(self, entry: ScheduledPod, address: IPAddress) -> None:
        pod, ns = entry.pod, entry.pod.meta.namespace
        labels = pod.meta.labels
        self.add(
            Workload(
                uid=pod_uid(ns, pod.meta.name, self.cluster_id),
                name=pod.meta.name,
                namespace=ns,
                addresses=(address,),
                service_account=pod.spec.service_account_name,
                node=pod.spec.node_name,
                tunnel_protocol=tunnel_protocol(labels, self.namespaces.get(ns, {})),
                trust_domain=self.trust_domain,
                cluster_id=self.cluster_id,
                workload_name=entry.workload_name,
                workload_type=entry.workload_type,
                canonical_name=canonical_name(labels, entry.workload_name),
                canonical_revision=canonical_revision(labels),
                services=self.registry.for_pod(pod),
                labels=labels,
                local=True,
                application_tunnel=_application_tunnel(pod.meta.annotations),
            )
        )

    def workload_entry(self, entry: WorkloadEntry) -> None:
        ns, name, spec = entry.meta.namespace, entry.meta.name, entry.spec
        labels = _we_labels(entry)
        self.add(
            Workload(
                uid=f"{self.cluster_id}//WorkloadEntry/{ns}/{name}",
                name=name,
                namespace=ns,
                addresses=self._addresses(spec.address, f"WorkloadEntry {ns}/{name}"),
                service_account=spec.service_account,
                node=labels.get(LABEL_NODE, ""),
                tunnel_protocol=tunnel_protocol(labels, self.namespaces.get(ns, {})),
                trust_domain=self.trust_domain,
                cluster_id=self.cluster_id,
                network=spec.network,
                workload_name=name,
                workload_type="workloadentry",
                canonical_name=canonical_name(labels, name),
                canonical_revision=canonical_revision(labels),
                services=self.registry.for_workload_entry(ns, labels, spec.ports),
                labels=labels,
                local=False,
            )
        )

    def service_entry(self, entry: ServiceEntry) -> None:
        ns, name = entry.meta.namespace, entry.meta.name
        internal = entry.spec.location == "MESH_INTERNAL"
        namespace_labels: Mapping[str, str] = self.namespaces.get(ns, {}) if internal else {}
        for ep in entry.spec.endpoints:
            ports = entry_ports(entry, ep.ports)
            self.add(
                Workload(
                    uid=f"{self.cluster_id}//ServiceEntry/{ns}/{name}/{ep.address}",
                    name=name,
                    namespace=ns,
                    addresses=self._addresses(ep.address, f"ServiceEntry {ns}/{name} endpoint"),
                    service_account=ep.service_account,
                    node="",
                    tunnel_protocol=tunnel_protocol(ep.labels, namespace_labels),
                    trust_domain=self.trust_domain,
                    cluster_id=self.cluster_id,
                    network=ep.network,
                    workload_name=name,
                    workload_type="workloadentry",
                    canonical_name=canonical_name(ep.labels, name),
                    canonical_revision=canonical_revision(ep.labels),
                    services=FrozenMap({f"{ns}/{host}": ports for host in entry.spec.hosts}),
                    labels=ep.labels,
                    local=False,
                )
            )

    def _addresses(self, text: str, where: str) -> tuple[IPAddress, ...]:
        ip = _ip(text)
        if ip is None:
            self.warnings.append(
                f"{where}: address {text!r} is not an IP address; the workload gets no "
                "address (hostname workloads are not supported yet)"
            )
            return ()
        return (ip,)


def build_snapshot(
    config: ConfigSet,
    allocator: AddressAllocator,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    cluster_id: str = DEFAULT_CLUSTER_ID,
    pod_labels: LabelOverrides = NO_OVERRIDES,
) -> MeshSnapshot:
    """The ambient index of ``config``; ``pod_labels`` overrides labels of pods by (ns, name).

    Raises ``AddressConflict`` when two objects claim the same explicit address.
    """
    config, waypoint_warnings = with_waypoints(config)
    pods, warnings = scheduled_pods(config, pod_labels)
    addresses = _allocate(config, pods, allocator)
    vips = {(k.namespace, k.name): a for k, a in addresses.items() if k.kind == "Service"}
    registry = ServiceRegistry(config, vips)
    builder = _Builder(config, registry, trust_domain, cluster_id)
    for entry in pods:
        key = AllocationKey("Pod", entry.pod.meta.namespace, entry.pod.meta.name)
        builder.pod(entry, addresses[key])
    for we in config.workload_entries():
        builder.workload_entry(we)
    for se in config.service_entries():
        builder.service_entry(se)
    nodes = {k.name: a for k, a in sorted(addresses.items()) if k.kind == "Node"}
    policies = build_policies(config)
    workloads, services, binding_warnings = bind_waypoints(
        config, builder.workloads, registry.services
    )
    return MeshSnapshot(
        workloads,
        services,
        (
            *waypoint_warnings,
            *warnings,
            *registry.warnings,
            *builder.warnings,
            *binding_warnings,
            *policies.warnings,
        ),
        nodes,
        policies.authorizations,
        policies.peer_authentications,
    )


def _application_tunnel(annotations: Mapping[str, str]) -> ApplicationTunnel:
    """``ambient.io/application-tunnel: PROXY`` asks for a PROXY v2 header with the peer identity."""
    value = annotations.get(ANNOTATION_APPLICATION_TUNNEL, "").upper()
    return ApplicationTunnel.PROXY if value == "PROXY" else ApplicationTunnel.NONE
