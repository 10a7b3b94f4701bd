"""A pod as an API server serves it, read into what this kubelet runs (``KubePod``).

The API server has validated the object already; this reads the fields the kubelet
honours and names the ones it cannot honour, so that the pod's status says why a
container does not start instead of running it wrong:

- each container's ``command``/``args``/``env``/``ports``/``workingDir`` become the
  runtime's ``Container`` (``env`` values and ``valueFrom.fieldRef``; any other
  ``valueFrom`` source, or ``envFrom``, is a ``CreateContainerConfigError`` naming the
  variable — there is no Secret or ConfigMap projection here);
- ``image`` is recorded in the status, never pulled: the host's filesystem is the
  image. A container without ``command`` and ``args`` has no entrypoint to run
  (there is no image to take one from): ``CreateContainerError``;
- ``readinessProbe``/``livenessProbe``/``startupProbe`` with ``tcpSocket``,
  ``httpGet`` or ``exec`` (named ports resolved against the container's ports);
  ``grpc`` probes are reported unsupported and count as passing;
- ``terminationGracePeriodSeconds`` (default 30), ``restartPolicy``,
  ``hostNetwork``, ``readinessGates``, the deletion timestamp and grace period;
- the user parts of ``securityContext`` (pod: ``runAsUser``, ``runAsGroup``,
  ``runAsNonRoot``, ``supplementalGroups``; container: those and ``privileged``),
  which the runtime applies as ``ambient.runtime.security`` says.

Init containers and volumes are not run or mounted: a pod with ``initContainers``
stays Pending with the reason in its ``Initialized`` condition; volumes are ignored
(a pod's files are the host's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ambient.config.frozen import FrozenMap
from ambient.config.resources import Container, ContainerPort, EnvVar, SecurityContext

__all__ = [
    "DEFAULT_GRACE",
    "KubeContainer",
    "KubePod",
    "Probe",
    "parse_pod",
]

DEFAULT_GRACE = 30.0
"""``terminationGracePeriodSeconds`` when a pod has none (Kubernetes' default)."""
SUPPORTED_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
)


@dataclass(frozen=True)
class Probe:
    """One probe of a container, with Kubernetes' defaults filled in."""

    kind: str  # "tcp", "http", "exec" or "unsupported"
    port: int = 0
    host: str = ""
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    problem: str = ""
    """Why the probe cannot run as written (an unsupported handler, an unknown port)."""


@dataclass(frozen=True)
class KubeContainer:
    """A container: what the runtime runs, plus what only the kubelet reads."""

    spec: Container
    image: str
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    config_error: str = ""
    """Why it cannot be configured (``CreateContainerConfigError``); empty if it can."""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class KubePod:
    """What this kubelet reads of a pod (see the module docstring)."""

    namespace: str
    name: str
    uid: str
    node: str
    service_account: str
    containers: tuple[KubeContainer, ...]
    labels: Mapping[str, str] = field(default_factory=FrozenMap)
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    grace_period: float = DEFAULT_GRACE
    restart_policy: str = "Always"
    host_network: bool = False
    init_containers: int = 0
    readiness_gates: tuple[str, ...] = ()
    deleting: bool = False
    deletion_grace: float | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    """The status as last read (conditions, IPs, start time, container statuses)."""
    security_context: SecurityContext | None = None
    """``spec.securityContext``'s user settings."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def pod_ip(self) -> str:
        return str(self.status.get("podIP") or "")

    def stop_grace(self) -> float:
        """How long its containers get between SIGTERM and SIGKILL when it is stopped."""
        if self.deletion_grace is not None:
            return self.deletion_grace
        return self.grace_period

    def same_run(self, other: KubePod) -> bool:
        """Whether ``other`` runs the same containers (only metadata or status changed)."""
        return self.uid == other.uid and [c.spec for c in self.containers] == [
            c.spec for c in other.containers
        ]


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _ports(raw: Any) -> tuple[ContainerPort, ...]:
    ports = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("containerPort"), int):
            ports.append(
                ContainerPort(
                    int(item["containerPort"]),
                    str(item.get("name") or ""),
                    str(item.get("protocol") or "TCP"),
                )
            )
    return tuple(ports)


def _env(raw: Any, problems: list[str]) -> tuple[EnvVar, ...]:
    out: list[EnvVar] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, Mapping) or not item.get("name"):
            continue
        name = str(item["name"])
        source = item.get("valueFrom")
        if source is None:
            out.append(EnvVar(name, str(item.get("value") or "")))
            continue
        field_ref = source.get("fieldRef") if isinstance(source, Mapping) else None
        path = field_ref.get("fieldPath") if isinstance(field_ref, Mapping) else None
        if isinstance(path, str) and (
            path in SUPPORTED_FIELD_PATHS
            or path.startswith(("metadata.labels['", "metadata.annotations['"))
        ):
            out.append(EnvVar(name, "", path))
            continue
        what = next(iter(source), "valueFrom") if isinstance(source, Mapping) else "valueFrom"
        if what == "fieldRef":
            what = f"fieldRef {path!r}"
        problems.append(f"env {name}: {what} is not supported by this kubelet")
    return tuple(out)


def _probe(raw: Any, ports: tuple[ContainerPort, ...]) -> Probe | None:
    if not isinstance(raw, Mapping):
        return None
    timing = Probe(
        "unsupported",
        initial_delay=_number(raw.get("initialDelaySeconds"), 0.0),
        period=_number(raw.get("periodSeconds"), 10.0),
        timeout=_number(raw.get("timeoutSeconds"), 1.0),
        success_threshold=int(_number(raw.get("successThreshold"), 1)),
        failure_threshold=int(_number(raw.get("failureThreshold"), 3)),
    )

    def port_of(value: Any) -> tuple[int, str]:
        if isinstance(value, int):
            return value, ""
        for port in ports:
            if port.name and port.name == value:
                return port.container_port, ""
        return 0, f"port {value!r} is not a port of the container"

    if isinstance(tcp := raw.get("tcpSocket"), Mapping):
        port, problem = port_of(tcp.get("port"))
        return replace(
            timing, kind="tcp", port=port, host=str(tcp.get("host") or ""), problem=problem
        )
    if isinstance(http := raw.get("httpGet"), Mapping):
        port, problem = port_of(http.get("port"))
        headers = tuple(
            (str(h.get("name")), str(h.get("value", "")))
            for h in http.get("httpHeaders") or []
            if isinstance(h, Mapping) and h.get("name")
        )
        return replace(
            timing,
            kind="http",
            port=port,
            host=str(http.get("host") or ""),
            path=str(http.get("path") or "/"),
            scheme=str(http.get("scheme") or "HTTP").upper(),
            headers=headers,
            problem=problem,
        )
    if isinstance(exec_ := raw.get("exec"), Mapping):
        command = tuple(str(a) for a in exec_.get("command") or [])
        problem = "" if command else "exec probe without a command"
        return replace(timing, kind="exec", command=command, problem=problem)
    handler = next((k for k in ("grpc",) if k in raw), "no handler")
    return replace(timing, problem=f"{handler} probes are not run here")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _security(raw: Any, *, pod: bool) -> SecurityContext | None:
    if not isinstance(raw, Mapping):
        return None
    non_root = raw.get("runAsNonRoot")
    privileged = raw.get("privileged")
    groups = raw.get("supplementalGroups") if pod else None
    return SecurityContext(
        run_as_user=_int(raw.get("runAsUser")),
        run_as_group=_int(raw.get("runAsGroup")),
        run_as_non_root=non_root if isinstance(non_root, bool) else None,
        supplemental_groups=tuple(g for g in groups or [] if _int(g) is not None),
        privileged=privileged if isinstance(privileged, bool) and not pod else None,
    )


def _container(raw: Mapping[str, Any]) -> KubeContainer:
    problems: list[str] = []
    ports = _ports(raw.get("ports"))
    env = _env(raw.get("env"), problems)
    if raw.get("envFrom"):
        problems.append("envFrom is not supported by this kubelet")
    spec = Container(
        name=str(raw.get("name") or ""),
        image=str(raw.get("image") or "") or None,
        command=tuple(str(a) for a in raw.get("command") or []),
        args=tuple(str(a) for a in raw.get("args") or []),
        env=env,
        ports=ports,
        working_dir=str(raw["workingDir"]) if raw.get("workingDir") else None,
        security_context=_security(raw.get("securityContext"), pod=False),
    )
    return KubeContainer(
        spec=spec,
        image=str(raw.get("image") or ""),
        readiness=_probe(raw.get("readinessProbe"), ports),
        liveness=_probe(raw.get("livenessProbe"), ports),
        startup=_probe(raw.get("startupProbe"), ports),
        config_error="; ".join(problems),
    )


def parse_pod(raw: Mapping[str, Any]) -> KubePod:
    """Read a pod object (a dict decoded from the API server's JSON)."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    deletion_grace = meta.get("deletionGracePeriodSeconds")
    return KubePod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        node=str(spec.get("nodeName") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        containers=tuple(
            _container(c) for c in spec.get("containers") or [] if isinstance(c, Mapping)
        ),
        labels=FrozenMap(_str_map(meta.get("labels"))),
        annotations=FrozenMap(_str_map(meta.get("annotations"))),
        grace_period=_number(spec.get("terminationGracePeriodSeconds"), DEFAULT_GRACE),
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        host_network=bool(spec.get("hostNetwork")),
        init_containers=len(spec.get("initContainers") or []),
        readiness_gates=tuple(
            str(g.get("conditionType"))
            for g in spec.get("readinessGates") or []
            if isinstance(g, Mapping) and g.get("conditionType")
        ),
        deleting=bool(meta.get("deletionTimestamp")),
        deletion_grace=None if deletion_grace is None else _number(deletion_grace, DEFAULT_GRACE),
        status=dict(status) if isinstance(status, Mapping) else {},
        security_context=_security(spec.get("securityContext"), pod=True),
    )
