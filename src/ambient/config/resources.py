"""Typed, frozen objects for the Kubernetes and Istio kinds the mesh reads.

Fields mirror the YAML (camelCase -> snake_case) with Kubernetes' defaults
applied: ``Pod.spec.serviceAccountName`` defaults to ``default``,
``spec.nodeName`` to ``node-1`` (the local contract), a Service port's
``targetPort`` to its ``port``, ``Deployment.spec.replicas`` to 1. Lists are
tuples and maps are ``FrozenMap``.

Every object has ``api_version``, ``kind`` and ``meta``; ``Resource`` is the
protocol they share, so kinds registered later by other packages fit in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ambient.config.frozen import FrozenMap

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_NODE_NAME",
    "DEFAULT_SERVICE_ACCOUNT",
    "LABEL_DATAPLANE_MODE",
    "LABEL_USE_WAYPOINT",
    "LABEL_USE_WAYPOINT_NAMESPACE",
    "LABEL_WAYPOINT_FOR",
    "Container",
    "ContainerPort",
    "Deployment",
    "DeploymentSpec",
    "EnvVar",
    "GenericResource",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Namespace",
    "ObjectMeta",
    "Pod",
    "PodSpec",
    "PodStatus",
    "PodTemplate",
    "Resource",
    "SecurityContext",
    "Service",
    "ServiceAccount",
    "ServiceEntry",
    "ServiceEntryPort",
    "ServiceEntrySpec",
    "ServicePort",
    "ServiceSpec",
    "TemplateMeta",
    "WorkloadEntry",
    "WorkloadEntrySpec",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_NODE_NAME = "node-1"

LABEL_DATAPLANE_MODE = "istio.io/dataplane-mode"
LABEL_USE_WAYPOINT = "istio.io/use-waypoint"
LABEL_USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
LABEL_WAYPOINT_FOR = "istio.io/waypoint-for"

Labels = FrozenMap[str, str]


class Resource(Protocol):
    """What every configuration object has."""

    @property
    def api_version(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def meta(self) -> ObjectMeta: ...


@dataclass(frozen=True)
class ObjectMeta:
    """``metadata``: ``namespace`` is ``""`` for cluster-scoped kinds (Namespace)."""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: Labels = field(default_factory=FrozenMap)
    annotations: Labels = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class Namespace:
    """A namespace; its labels (``istio.io/dataplane-mode``...) apply to its workloads."""

    meta: ObjectMeta
    api_version: str = "v1"
    kind: str = field(default="Namespace", init=False)


@dataclass(frozen=True)
class ServiceAccount:
    """A service account: the ``sa`` part of a workload's SPIFFE identity."""

    meta: ObjectMeta
    api_version: str = "v1"
    kind: str = field(default="ServiceAccount", init=False)


@dataclass(frozen=True)
class ServicePort:
    """A Service port; ``target_port`` is a number or a container port name."""

    port: int
    target_port: int | str
    protocol: str = "TCP"
    name: str = ""
    app_protocol: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """``Service.spec``. ``cluster_ip`` is None (allocate), an IP, or ``"None"`` (headless)."""

    ports: tuple[ServicePort, ...] = ()
    selector: Labels = field(default_factory=FrozenMap)
    cluster_ip: str | None = None
    type: str = "ClusterIP"

    @property
    def headless(self) -> bool:
        """True for ``clusterIP: None``: no virtual IP, clients reach pods directly."""
        return self.cluster_ip == "None"


@dataclass(frozen=True)
class Service:
    """A Service: a virtual IP and hostname in front of the pods its selector matches."""

    meta: ObjectMeta
    spec: ServiceSpec
    api_version: str = "v1"
    kind: str = field(default="Service", init=False)


@dataclass(frozen=True)
class EnvVar:
    """An environment variable: a literal ``value`` or a ``fieldRef`` path (``field_path``)."""

    name: str
    value: str = ""
    field_path: str | None = None


@dataclass(frozen=True)
class ContainerPort:
    """A port a container listens on (on ``POD_IP``)."""

    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class SecurityContext:
    """The user part of a ``securityContext`` (pod level, or a container's own).

    A container's values win over its pod's, field by field, as kubelet merges
    them; ``supplemental_groups`` exists at the pod level only. The other fields
    Kubernetes has (capabilities, seccomp...) are ignored locally.
    """

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    supplemental_groups: tuple[int, ...] = ()
    privileged: bool | None = None
    """Container level only: it runs as the mesh itself (root under a root ``up``)."""


@dataclass(frozen=True)
class Container:
    """A container; locally, ``command`` + ``args`` run as a process (``image`` is ignored)."""

    name: str
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    working_dir: str | None = None
    security_context: SecurityContext | None = None


@dataclass(frozen=True)
class PodSpec:
    """``Pod.spec`` (also a Deployment's ``spec.template.spec``)."""

    containers: tuple[Container, ...]
    service_account_name: str = DEFAULT_SERVICE_ACCOUNT
    node_name: str = DEFAULT_NODE_NAME
    host_network: bool = False  # read from an API server only (the folder mode ignores it)
    security_context: SecurityContext | None = None


@dataclass(frozen=True)
class PodStatus:
    """The parts of ``Pod.status`` that matter here: a fixed ``podIP`` if the user gives one.

    ``ready``: None in the folder mode (health comes from the local runtime); for a pod
    read from an API server, its ``Ready`` condition is ``True`` and it is not being
    deleted (``ambient.kube.convert``), as Istio's ambient index decides a pod's health.
    """

    pod_ip: str | None = None
    host_ip: str | None = None
    phase: str | None = None
    ready: bool | None = None

    @property
    def terminal(self) -> bool:
        """``Succeeded`` or ``Failed``: its containers are done and its IP may be reused."""
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class Pod:
    """A pod: its processes are run by the local runtime."""

    meta: ObjectMeta
    spec: PodSpec
    status: PodStatus = field(default_factory=PodStatus)
    api_version: str = "v1"
    kind: str = field(default="Pod", init=False)
    workload: tuple[str, str] | None = None
    """A pod read from an API server: ``(name, type)`` of the workload its controller
    owner implies (``ambient.kube.owners``); None in the folder mode."""


@dataclass(frozen=True)
class LabelSelectorRequirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (``matchLabels`` and ``matchExpressions``, ANDed)."""

    match_labels: Labels = field(default_factory=FrozenMap)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the selector has no terms (it would select everything)."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with ``labels`` is selected."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def __str__(self) -> str:
        terms = [f"{k}={v}" for k, v in self.match_labels.items()]
        terms += [f"{r.key} {r.operator} ({', '.join(r.values)})" for r in self.match_expressions]
        return ", ".join(terms)


@dataclass(frozen=True)
class TemplateMeta:
    """A pod template's metadata: the labels and annotations its pods get."""

    labels: Labels = field(default_factory=FrozenMap)
    annotations: Labels = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class PodTemplate:
    """``Deployment.spec.template``."""

    spec: PodSpec
    meta: TemplateMeta = field(default_factory=TemplateMeta)


@dataclass(frozen=True)
class DeploymentSpec:
    """``Deployment.spec``: ``replicas`` copies of ``template``."""

    selector: LabelSelector
    template: PodTemplate
    replicas: int = 1


@dataclass(frozen=True)
class Deployment:
    """A Deployment; expanding it into pods is the control plane's / runtime's job."""

    meta: ObjectMeta
    spec: DeploymentSpec
    api_version: str = "apps/v1"
    kind: str = field(default="Deployment", init=False)


@dataclass(frozen=True)
class WorkloadEntrySpec:
    """``WorkloadEntry.spec`` (also a ``ServiceEntry`` endpoint)."""

    address: str
    ports: FrozenMap[str, int] = field(default_factory=FrozenMap)
    labels: Labels = field(default_factory=FrozenMap)
    network: str = ""
    locality: str = ""
    weight: int | None = None
    service_account: str = DEFAULT_SERVICE_ACCOUNT


@dataclass(frozen=True)
class WorkloadEntry:
    """A workload this host does not run (a VM, another machine), reached at its address."""

    meta: ObjectMeta
    spec: WorkloadEntrySpec
    api_version: str = "networking.istio.io/v1"
    kind: str = field(default="WorkloadEntry", init=False)


@dataclass(frozen=True)
class ServiceEntryPort:
    """A ServiceEntry port; ``protocol`` is Istio's canonical spelling (``HTTP``, ``TCP``...)."""

    number: int
    protocol: str
    name: str
    target_port: int | None = None


@dataclass(frozen=True)
class ServiceEntrySpec:
    """``ServiceEntry.spec``; ``workload_selector`` is ``workloadSelector.labels``."""

    hosts: tuple[str, ...]
    ports: tuple[ServiceEntryPort, ...]
    addresses: tuple[str, ...] = ()
    location: str = "MESH_EXTERNAL"
    resolution: str = "NONE"
    workload_selector: Labels | None = None
    endpoints: tuple[WorkloadEntrySpec, ...] = ()
    export_to: tuple[str, ...] = ()
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceEntry:
    """A ServiceEntry: hosts added to the mesh's service registry."""

    meta: ObjectMeta
    spec: ServiceEntrySpec
    api_version: str = "networking.istio.io/v1"
    kind: str = field(default="ServiceEntry", init=False)


@dataclass(frozen=True)
class GenericResource:
    """A kind whose metadata is checked here but whose ``spec`` is kept as parsed YAML.

    AuthorizationPolicy and PeerAuthentication load as this, their specs checked by
    ``ambient.authz`` (``config.security``); every other built-in kind is typed.
    """

    api_version: str
    kind: str
    meta: ObjectMeta
    spec: FrozenMap[str, object] = field(default_factory=FrozenMap)
