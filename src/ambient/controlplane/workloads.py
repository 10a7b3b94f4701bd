"""Workloads in the shape of Istio's workload API, from pods, WorkloadEntries and ServiceEntries.

What one object becomes (the index decides which objects and when; see
``index``). uids are Istio's: ``<cluster>//Pod/<ns>/<name>``,
``<cluster>//WorkloadEntry/<ns>/<name>``, ``<cluster>//ServiceEntry/<ns>/<se>/<address>``.
Decisions:

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
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from ambient.config.frozen import FrozenMap
from ambient.config.resources import LABEL_DATAPLANE_MODE, ServiceEntry, WorkloadEntry
from ambient.controlplane.expand import ScheduledPod
from ambient.controlplane.services import ServiceRegistry, entry_ports
from ambient.controlplane.waypoints import WaypointBinder
from ambient.state.workload import (
    ANNOTATION_APPLICATION_TUNNEL,
    ApplicationTunnel,
    IPAddress,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    waypoint_of,
)

__all__ = [
    "DEFAULT_CLUSTER_ID",
    "LABEL_NODE",
    "WorkloadBuilder",
    "canonical_name",
    "canonical_revision",
    "ip_or_none",
    "pod_uid",
    "tunnel_protocol",
    "with_health",
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


def ip_or_none(text: str) -> IPAddress | None:
    """``text`` as an IP address, None if it is not one."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _we_labels(entry: WorkloadEntry) -> FrozenMap[str, str]:
    return FrozenMap({**entry.spec.labels, **entry.meta.labels})


class WorkloadBuilder:
    """Workloads of one snapshot; collects warnings."""

    def __init__(
        self,
        namespaces: Mapping[str, Mapping[str, str]],
        registry: ServiceRegistry,
        trust_domain: str,
        cluster_id: str,
        binder: WaypointBinder,
    ) -> None:
        self.registry = registry
        self.binder = binder
        self.trust_domain = trust_domain
        self.cluster_id = cluster_id
        self.namespaces = namespaces
        self.workloads: dict[str, Workload] = {}
        self.warnings: list[str] = []

    def add(self, workload: Workload) -> None:
        workload = self.binder.workload(workload)
        if workload.uid in self.workloads:
            self.warnings.append(f"workload {workload.uid} is defined twice; the first is kept")
            return
        self.workloads[workload.uid] = workload

    def pod_workload(self, entry: ScheduledPod, address: IPAddress) -> Workload:
        pod, ns = entry.pod, entry.pod.meta.namespace
        labels = pod.meta.labels
        workload = Workload(
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
            # Read from an API server: the pod's Ready condition (None: the runtime reports).
            status=WorkloadStatus.UNHEALTHY
            if pod.status.ready is False
            else WorkloadStatus.HEALTHY,
        )
        return self.binder.workload(workload)

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
        ip = ip_or_none(text)
        if ip is None:
            self.warnings.append(
                f"{where}: address {text!r} is not an IP address; the workload gets no "
                "address (hostname workloads are not supported yet)"
            )
            return ()
        return (ip,)


def with_health(workload: Workload, ready: AbstractSet[str] | None) -> Workload:
    """``workload`` UNHEALTHY unless ready (``ready`` None: health is not tracked)."""
    # A waypoint's pod has no processes of its own: its node proxy serves it as soon as
    # the pod is scheduled there (see ambient.ztunnel.waypoints).
    if ready is None or workload.uid in ready or waypoint_of(workload) is not None:
        return workload
    return dataclasses.replace(workload, status=WorkloadStatus.UNHEALTHY)


def _application_tunnel(annotations: Mapping[str, str]) -> ApplicationTunnel:
    """``ambient.io/application-tunnel: PROXY`` asks for a PROXY v2 header with the peer identity."""
    value = annotations.get(ANNOTATION_APPLICATION_TUNNEL, "").upper()
    return ApplicationTunnel.PROXY if value == "PROXY" else ApplicationTunnel.NONE
