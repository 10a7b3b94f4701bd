"""Waypoints: Gateways of class ``istio-waypoint``, and which services and workloads use them.

What istiod's gateway deployment controller and ambient index do, here:

- **Deployment.** Each waypoint Gateway ``<ns>/<gw>`` becomes objects as
  Istio's controller would create them: a ServiceAccount ``<gw>`` (so the
  waypoint's identity is ``spiffe://<td>/ns/<ns>/sa/<gw>``), a Deployment
  ``<gw>`` whose pods carry ``gateway.networking.k8s.io/gateway-name: <gw>``
  and ``istio.io/dataplane-mode: none`` (a waypoint is never captured), and a
  Service ``<gw>`` (ports 15021 status, 15008 mesh) selecting them. The pods
  have no containers: the node proxy of the pod's node hosts the waypoint
  (see ``ambient.ztunnel.waypoints``). ``ambient.io/replicas`` (default 1) and
  ``ambient.io/nodes`` annotations on the Gateway scale and place it, the local
  stand-ins for scaling the Deployment.
- **Binding.** ``istio.io/use-waypoint`` (with ``istio.io/use-waypoint-namespace``,
  default: the object's namespace) on a Service, Pod, WorkloadEntry or their
  Namespace; the object's own label beats its namespace's, and ``none`` opts
  out. A waypoint serves what its ``istio.io/waypoint-for`` label says
  (``service`` by default, ``workload``, ``all``, ``none``); a binding it does
  not serve, or to a waypoint that does not exist, is ignored with a warning
  (istiod's ``WaypointBound=False``), and the traffic goes direct. A
  waypoint's own pods never use a waypoint.
- **Addressing.** A bound object's ``waypoint`` is the waypoint Service
  (``<ns>/<gw>.<ns>.svc.cluster.local`` on 15008); clients pick one of its
  healthy endpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ambient.config.configset import ConfigSet, Origin, Ref
from ambient.config.frozen import FrozenMap
from ambient.config.gateway import Gateway
from ambient.config.resources import (
    LABEL_DATAPLANE_MODE,
    LABEL_USE_WAYPOINT,
    LABEL_USE_WAYPOINT_NAMESPACE,
    LABEL_WAYPOINT_FOR,
    Deployment,
    DeploymentSpec,
    LabelSelector,
    ObjectMeta,
    PodSpec,
    PodTemplate,
    Resource,
    ServiceAccount,
    ServicePort,
    ServiceSpec,
    TemplateMeta,
)
from ambient.config.resources import Service as KubeService
from ambient.controlplane.expand import ANNOTATION_NODES
from ambient.state.workload import (
    LABEL_GATEWAY_NAME,
    GatewayAddress,
    Service,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    waypoint_of,
)

__all__ = [
    "ANNOTATION_REPLICAS",
    "LABEL_GATEWAY_NAME",
    "WAYPOINT_PORTS",
    "GatewayStatus",
    "WaypointBinder",
    "WaypointObjects",
    "gateway_status",
    "waypoint_gateways",
    "waypoint_of",
    "with_waypoints",
]

ANNOTATION_REPLICAS = "ambient.io/replicas"
WAYPOINT_PORTS = ((15021, "status-port"), (15008, "mesh"))
_FOR_VALUES = ("service", "workload", "all", "none")


def waypoint_gateways(config: ConfigSet) -> tuple[Gateway, ...]:
    """The Gateways of class ``istio-waypoint`` (by namespace and name).

    Only the Gateway refs are sorted: this runs on every change of the index.
    """
    refs = sorted(ref for ref in config.objects if ref.kind == "Gateway")
    return tuple(
        gw for ref in refs if isinstance(gw := config.objects[ref], Gateway) and gw.is_waypoint
    )


def _replicas(gateway: Gateway, warnings: list[str]) -> int:
    value = gateway.meta.annotations.get(ANNOTATION_REPLICAS, "1")
    try:
        replicas = int(value)
    except ValueError:
        replicas = -1
    if not 0 <= replicas <= 100:
        warnings.append(
            f"Gateway {gateway.meta.namespace}/{gateway.meta.name}: {ANNOTATION_REPLICAS}: "
            f"{value!r} is not a number of replicas from 0 to 100; using 1"
        )
        return 1
    return replicas


def _objects(gateway: Gateway, warnings: list[str]) -> list[Resource]:
    ns, name = gateway.meta.namespace, gateway.meta.name
    selector = FrozenMap({LABEL_GATEWAY_NAME: name})
    labels = FrozenMap(
        {
            **gateway.spec.infrastructure.labels,
            LABEL_GATEWAY_NAME: name,
            LABEL_DATAPLANE_MODE: "none",
        }
    )
    annotations = {k: v for k, v in gateway.meta.annotations.items() if k == ANNOTATION_NODES}
    template = PodTemplate(
        PodSpec(containers=(), service_account_name=name),
        TemplateMeta(labels, FrozenMap(gateway.spec.infrastructure.annotations)),
    )
    deployment = Deployment(
        ObjectMeta(name, ns, selector, FrozenMap(annotations)),
        DeploymentSpec(
            selector=LabelSelector(match_labels=selector),
            template=template,
            replicas=_replicas(gateway, warnings),
        ),
    )
    service = KubeService(
        ObjectMeta(name, ns, selector),
        ServiceSpec(
            ports=tuple(ServicePort(port, port, "TCP", pname) for port, pname in WAYPOINT_PORTS),
            selector=selector,
        ),
    )
    return [ServiceAccount(ObjectMeta(name, ns)), deployment, service]


class WaypointObjects:
    """``with_waypoints`` remembering its results, so unchanged Gateways keep the very
    same generated objects (the incremental index compares objects by identity)."""

    def __init__(self) -> None:
        self._objects: dict[Ref, tuple[Gateway, list[Resource], tuple[str, ...]]] = {}
        self._last: tuple[ConfigSet, ConfigSet, tuple[str, ...]] | None = None

    def __call__(self, config: ConfigSet) -> tuple[ConfigSet, tuple[str, ...]]:
        if self._last is not None and self._last[0] is config:
            return self._last[1], self._last[2]
        result = with_waypoints(config, self._generated)
        self._last = (config, *result)
        return result

    def _generated(self, gateway: Gateway) -> tuple[list[Resource], tuple[str, ...]]:
        ref = Ref.of(gateway)
        cached = self._objects.get(ref)
        if cached is None or cached[0] is not gateway:
            cached = (gateway, *_fresh(gateway))
            self._objects[ref] = cached
        return cached[1], cached[2]


def _fresh(gateway: Gateway) -> tuple[list[Resource], tuple[str, ...]]:
    warnings: list[str] = []
    return _objects(gateway, warnings), tuple(warnings)


def with_waypoints(
    config: ConfigSet,
    generate: Callable[[Gateway], tuple[list[Resource], tuple[str, ...]]] = _fresh,
) -> tuple[ConfigSet, tuple[str, ...]]:
    """``config`` plus the objects each waypoint Gateway stands for, and warnings.

    Objects the user declared under the same names win (a warning says so).
    """
    warnings: list[str] = []
    gateways = waypoint_gateways(config)
    if not gateways:
        return config, ()
    objects = dict(config.objects)
    origins = dict(config.origins)
    for gateway in gateways:
        origin = config.origin(gateway)
        generated, problems = generate(gateway)
        warnings += problems
        for obj in generated:
            ref = Ref.of(obj)
            if ref in objects:
                if obj.kind != "ServiceAccount":
                    warnings.append(
                        f"Gateway {gateway.meta.namespace}/{gateway.meta.name}: a {obj.kind} "
                        f"named {obj.meta.name!r} already exists; the waypoint does not replace it"
                    )
                continue
            objects[ref] = obj
            if origin is not None:  # where the Gateway was read, without its document
                origins[ref] = Origin(origin.file, origin.document, origin.item)
    return ConfigSet(objects, origins, config.warnings), tuple(warnings)


@dataclass(frozen=True)
class _Binding:
    name: str
    namespace: str


def _binding(
    labels: Mapping[str, str], namespace_labels: Mapping[str, str], namespace: str
) -> _Binding | None:
    source = labels if LABEL_USE_WAYPOINT in labels else namespace_labels
    name = source.get(LABEL_USE_WAYPOINT)
    if not name or name == "none":
        return None
    return _Binding(name, source.get(LABEL_USE_WAYPOINT_NAMESPACE) or namespace)


class WaypointBinder:
    """Resolves ``istio.io/use-waypoint`` for the services and workloads of one config."""

    def __init__(self, config: ConfigSet, domain: str = "svc.cluster.local") -> None:
        self.gateways = {(g.meta.namespace, g.meta.name): g for g in waypoint_gateways(config)}
        self.namespaces = {ns.meta.name: ns.meta.labels for ns in config.namespaces()}
        self.service_labels = {
            (s.meta.namespace, s.meta.name): s.meta.labels for s in config.services()
        }
        self.domain = domain
        self.warnings: list[str] = []

    def _resolve(
        self, what: str, kind: str, labels: Mapping[str, str], namespace: str
    ) -> GatewayAddress | None:
        binding = _binding(labels, self.namespaces.get(namespace, {}), namespace)
        if binding is None:
            return None
        gateway = self.gateways.get((binding.namespace, binding.name))
        if gateway is None:
            self.warnings.append(
                f"{what}: {LABEL_USE_WAYPOINT}: waypoint {binding.namespace}/{binding.name} "
                "does not exist; traffic goes direct"
            )
            return None
        serves = gateway.meta.labels.get(LABEL_WAYPOINT_FOR, "service")
        if serves not in _FOR_VALUES:
            serves = "service"
        if serves not in (kind, "all"):
            if LABEL_USE_WAYPOINT in labels:  # only warn for an explicit binding
                self.warnings.append(
                    f"{what}: waypoint {binding.namespace}/{binding.name} is for {serves!r} "
                    f"traffic ({LABEL_WAYPOINT_FOR}), not {kind!r}; traffic goes direct"
                )
            return None
        host = f"{binding.name}.{binding.namespace}.{self.domain}"
        return GatewayAddress(f"{binding.namespace}/{host}")

    def service(self, service: Service) -> Service:
        """``service`` with its waypoint resolved (a waypoint's own Service has none)."""
        labels = self.service_labels.get((service.namespace, service.name))
        if labels is None or (service.namespace, service.name) in self.gateways:
            waypoint = None
        else:
            what = f"Service {service.namespace}/{service.name}"
            waypoint = self._resolve(what, "service", labels, service.namespace)
        if waypoint == service.waypoint:
            return service
        return dataclasses.replace(service, waypoint=waypoint)

    def workload(self, workload: Workload) -> Workload:
        """``workload`` with its waypoint resolved; a waypoint's pods speak HBONE, use none."""
        if waypoint_of(workload) is not None and workload.local:
            return dataclasses.replace(
                workload, tunnel_protocol=TunnelProtocol.HBONE, waypoint=None
            )
        what = f"{workload.workload_type} {workload.namespace}/{workload.name}"
        waypoint = self._resolve(what, "workload", workload.labels, workload.namespace)
        if waypoint == workload.waypoint:
            return workload
        return dataclasses.replace(workload, waypoint=waypoint)


@dataclass(frozen=True)
class GatewayStatus:
    """``status`` of a waypoint Gateway, as ``ambient get gateway -o yaml`` shows it."""

    programmed: bool
    addresses: tuple[str, ...]
    ready_replicas: int
    message: str

    def to_dict(self) -> dict[str, object]:
        reason = "Programmed" if self.programmed else "NoResources"
        return {
            "addresses": [{"type": "IPAddress", "value": a} for a in self.addresses],
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "Resource accepted",
                },
                {
                    "type": "Programmed",
                    "status": "True" if self.programmed else "False",
                    "reason": reason,
                    "message": self.message,
                },
            ],
            "listeners": [
                {
                    "name": "mesh",
                    "attachedRoutes": 0,
                    "conditions": [
                        {"type": "Programmed", "status": "True" if self.programmed else "False"}
                    ],
                }
            ],
        }


def gateway_status(
    gateway: Gateway, workloads: Mapping[str, Workload], services: Mapping[str, Service]
) -> GatewayStatus:
    """Programmed once at least one of the waypoint's pods is a healthy HBONE endpoint."""
    ns, name = gateway.meta.namespace, gateway.meta.name
    if not gateway.is_waypoint:
        return GatewayStatus(
            False, (), 0, f"class {gateway.spec.gateway_class_name!r} is not run by this mesh"
        )
    ready = [
        w
        for w in workloads.values()
        if w.namespace == ns and waypoint_of(w) == name and w.status is WorkloadStatus.HEALTHY
    ]
    service = services.get(f"{ns}/{name}.{ns}.svc.cluster.local")
    addresses = tuple(str(a) for a in service.addresses) if service is not None else ()
    if ready:
        return GatewayStatus(
            True, addresses, len(ready), "Resource programmed, assigned to service(s)"
        )
    return GatewayStatus(False, addresses, 0, "waiting for a ready waypoint replica")
