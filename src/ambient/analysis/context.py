"""What analyzers ask of a configuration: workloads with their enrolment, hosts, waypoints.

Built once per analysis from a loaded ``ConfigSet``. A "workload" here is what
selectors can match: a Pod, a Deployment's pod template, a WorkloadEntry, and
each waypoint's pods (labelled ``gateway.networking.k8s.io/gateway-name``).
Enrolment follows the control plane: the workload's own
``istio.io/dataplane-mode`` beats its namespace's, and only ``ambient`` enrols.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ambient.analysis.messages import Message, MessageType
from ambient.config.configset import ConfigSet, Ref
from ambient.config.gateway import Gateway
from ambient.config.resources import (
    LABEL_DATAPLANE_MODE,
    Deployment,
    Pod,
    Resource,
    WorkloadEntry,
)
from ambient.config.rules import CLUSTER_DOMAIN

__all__ = ["AnalysisContext", "SelectableWorkload", "labels_text"]


def labels_text(labels: Mapping[str, str]) -> str:
    """Labels as a selector reads them: ``a=1,b=2``."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


LABEL_GATEWAY_NAME = "gateway.networking.k8s.io/gateway-name"


@dataclass(frozen=True)
class SelectableWorkload:
    ref: Ref
    namespace: str
    labels: Mapping[str, str]
    enrolled: bool
    waypoint: bool = False  # a waypoint's pods (not captured; run the waypoint)


class AnalysisContext:
    """A ``ConfigSet`` with the lookups analyzers share, and the messages they add."""

    def __init__(self, config: ConfigSet) -> None:
        self.config = config
        self.messages: list[Message] = []
        self.namespace_labels = {ns.meta.name: ns.meta.labels for ns in config.namespaces()}
        self.waypoints = {
            (g.meta.namespace, g.meta.name): g for g in config.of_type(Gateway) if g.is_waypoint
        }
        self.workloads = self._workloads()
        self.hosts = {
            f"{s.meta.name}.{s.meta.namespace}.svc.{CLUSTER_DOMAIN}" for s in config.services()
        } | {h for se in config.service_entries() for h in se.spec.hosts}

    def _workloads(self) -> list[SelectableWorkload]:
        out = []
        for obj in self.config:
            if isinstance(obj, Pod):
                labels: Mapping[str, str] = obj.meta.labels
            elif isinstance(obj, Deployment):
                labels = obj.spec.template.meta.labels
            elif isinstance(obj, WorkloadEntry):
                labels = obj.spec.labels
            else:
                continue
            ns = obj.meta.namespace
            out.append(SelectableWorkload(Ref.of(obj), ns, labels, self.enrolled(labels, ns)))
        for (ns, name), gateway in sorted(self.waypoints.items()):
            labels = {**gateway.spec.infrastructure.labels, LABEL_GATEWAY_NAME: name}
            out.append(SelectableWorkload(Ref.of(gateway), ns, labels, False, waypoint=True))
        return out

    def enrolled(self, labels: Mapping[str, str], namespace: str) -> bool:
        """Whether a workload with ``labels`` in ``namespace`` is captured by ztunnel."""
        ns_labels: Mapping[str, str] = self.namespace_labels.get(namespace, {})
        return labels.get(LABEL_DATAPLANE_MODE, ns_labels.get(LABEL_DATAPLANE_MODE)) == "ambient"

    def selected(
        self, namespace: str, match_labels: Mapping[str, str], *, any_namespace: bool = False
    ) -> list[SelectableWorkload]:
        """Workloads in ``namespace`` (or anywhere) whose labels include ``match_labels``."""
        return [
            w
            for w in self.workloads
            if (any_namespace or w.namespace == namespace)
            and all(w.labels.get(k) == v for k, v in match_labels.items())
        ]

    def fqdn(self, host: str, namespace: str) -> str:
        """Istio's host resolution: a short name is in ``namespace``; a dotted name is kept."""
        return host if "." in host else f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"

    def has_host(self, fqdn: str) -> bool:
        """Whether a Service or ServiceEntry declares ``fqdn`` (wildcards match)."""
        if fqdn in self.hosts:
            return True
        return any(
            h.startswith("*") and fqdn.endswith(h[1:]) for h in self.hosts
        ) or fqdn.startswith("*")

    def report(self, kind: MessageType, obj: Resource | None, text: str, path: str = "") -> None:
        """Add a message about ``obj`` (located by its origin)."""
        if obj is None:
            self.messages.append(Message(kind, text, path=path))
            return
        self.messages.append(Message(kind, text, Ref.of(obj), self.config.origin(obj), path))
