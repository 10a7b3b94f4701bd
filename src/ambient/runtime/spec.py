"""What the runtime needs to run one pod, and each container's argv, env and folder.

Environment of a container process, lowest precedence first:

1. A pod's container (``plan_launch`` with ``run_as``) starts from only
   ``PATH`` (the supervisor's, so ``python3`` or ``./server`` resolve as in the
   user's shell; a standard one if unset), ``HOME`` (the home of the user it
   runs as, ``/`` if none) and ``HOSTNAME`` (the pod's name), as a container
   starts from its image's few variables: nothing of the mesh's own
   environment (credentials, ``SSH_AUTH_SOCK``, proxies...) reaches a pod.
   No ``KUBERNETES_SERVICE_*``: there is no API server to point at. The mesh's
   own processes (``run_as`` None) inherit the supervisor's environment minus
   every variable whose name ends in ``_PROXY`` in any case (``ALL_PROXY``,
   ``https_proxy``, ``NO_PROXY``...): the mesh decides where traffic goes.
2. The pod-level variables of the local contract: ``POD_IP``, ``POD_NAME``,
   ``POD_NAMESPACE``, ``SERVICE_ACCOUNT``, ``NODE_NAME``; in local mode
   (``PodRun.proxy`` set) ``ALL_PROXY`` and ``all_proxy`` (SOCKS5, 15080), and
   with ``PodRun.connect_proxy`` the HTTP CONNECT port (15081) as
   ``HTTPS_PROXY``/``https_proxy`` (Go's ``net/http`` and grpc-go for every
   target, curl and Python for ``https://``), ``grpc_proxy`` (grpc core:
   grpcio, for plaintext targets too), ``GRPC_PROXY_EXP`` (grpc-java's variable,
   as ``host:port``) and ``NO_PROXY``/``no_proxy`` = ``localhost``; then
   ``PodRun.extra_env``, which may override them. ``HTTP_PROXY`` is not set:
   clients send absolute-form requests to it for ``http://`` URLs, which the
   CONNECT port does not serve (they keep using ``ALL_PROXY``).
3. The container's ``env``, in order. ``value`` is ``$(VAR)``-expanded from the
   container's earlier entries and level 2 (as kubelet does with its service
   variables); ``valueFrom.fieldRef`` is resolved and not expanded.

``NO_PROXY`` names ``localhost`` only: pod IPs are loopback addresses
(127.x.y.z), so a ``NO_PROXY`` of 127.0.0.0/8 would let pod-to-pod traffic
bypass the mesh. Everything else goes to the node's ztunnel, which connects
non-mesh destinations directly, like captured traffic in Istio. A container
may still set ``NO_PROXY`` itself.

``command`` and ``args`` are expanded from levels 2 and 3, never from level 1,
exactly as in Kubernetes (where the image's environment is not visible to
``$(VAR)``). Without an image there is no entrypoint: ``command`` + ``args`` is
the argv, or ``args`` alone when ``command`` is empty; a container with
neither is an error. ``workingDir`` defaults to the folder the manifest came
from (``PodRun.base_dir``) and a relative one is taken from there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambient.config.frozen import FrozenMap
from ambient.config.resources import (
    DEFAULT_NODE_NAME,
    DEFAULT_SERVICE_ACCOUNT,
    Container,
    Pod,
    SecurityContext,
)
from ambient.runtime.expansion import expand

__all__ = [
    "DEFAULT_PATH",
    "ContainerLaunch",
    "PodRun",
    "PodSpecError",
    "RunAs",
    "base_env",
    "container_argv",
    "container_env",
    "inherited_env",
    "plan_launch",
    "pod_env",
    "resolve_field_path",
]

DEFAULT_HOST_IP = "127.0.0.1"


class PodSpecError(ValueError):
    """A container that cannot be started as specified (no command, missing folder...)."""

    def __init__(self, pod: PodRun, container: str | None, problem: str) -> None:
        where = f"pod {pod.namespace}/{pod.name}"
        if container is not None:
            where += f", container {container!r}"
        super().__init__(f"{where}: {problem}")
        self.namespace = pod.namespace
        self.pod = pod.name
        self.container = container


@dataclass(frozen=True, kw_only=True)
class PodRun:
    """One pod as the runtime runs it: identity, address, metadata and containers."""

    namespace: str
    name: str
    uid: str
    ip: str
    containers: tuple[Container, ...]
    node: str = DEFAULT_NODE_NAME
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    labels: Mapping[str, str] = field(default_factory=FrozenMap)
    annotations: Mapping[str, str] = field(default_factory=FrozenMap)
    proxy: str | None = None
    """``ALL_PROXY`` for enrolled pods, e.g. ``socks5h://127.10.0.5:15080``; None otherwise."""
    connect_proxy: str | None = None
    """The pod's HTTP CONNECT proxy, e.g. ``http://127.10.0.5:15081`` (``HTTPS_PROXY`` ...)."""
    extra_env: Mapping[str, str] = field(default_factory=FrozenMap)
    base_dir: Path = field(default_factory=Path.cwd)
    """The folder the manifest came from: the default working directory."""
    host_ip: str = DEFAULT_HOST_IP
    netns: str | None = None
    """``ambient up --netns``: the pod's network namespace; its processes run inside it."""
    security_context: SecurityContext | None = None
    """``spec.securityContext``: the pod-level user settings its containers inherit."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "containers", tuple(self.containers))
        for name in ("labels", "annotations", "extra_env"):
            object.__setattr__(self, name, FrozenMap(getattr(self, name)))
        object.__setattr__(self, "base_dir", Path(self.base_dir).absolute())

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, name)``: how the supervisor knows this pod."""
        return (self.namespace, self.name)

    @classmethod
    def from_pod(
        cls,
        pod: Pod,
        *,
        uid: str,
        base_dir: Path,
        ip: str | None = None,
        proxy: str | None = None,
        connect_proxy: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> PodRun:
        """Build from a loaded ``Pod``; ``ip`` defaults to the manifest's ``status.podIP``."""
        address = ip or pod.status.pod_ip
        if not address:
            raise ValueError(f"pod {pod.meta.namespace}/{pod.meta.name} has no IP; allocate one")
        return cls(
            namespace=pod.meta.namespace,
            name=pod.meta.name,
            uid=uid,
            ip=address,
            containers=pod.spec.containers,
            node=pod.spec.node_name,
            service_account=pod.spec.service_account_name,
            labels=pod.meta.labels,
            annotations=pod.meta.annotations,
            proxy=proxy,
            connect_proxy=connect_proxy,
            extra_env=extra_env or FrozenMap(),
            base_dir=base_dir,
            host_ip=pod.status.host_ip or DEFAULT_HOST_IP,
            security_context=pod.spec.security_context,
        )


@dataclass(frozen=True)
class RunAs:
    """The ids a container sees (``uid``, ``gid``, ``groups``) and has on the host."""

    uid: int
    gid: int
    host_uid: int
    host_gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"

    def to_json(self) -> dict[str, Any]:
        """As ``ambient.launcher.sandbox.enter`` takes it."""
        return {
            "uid": self.uid,
            "gid": self.gid,
            "hostUid": self.host_uid,
            "hostGid": self.host_gid,
            "groups": list(self.groups),
        }


@dataclass(frozen=True)
class ContainerLaunch:
    """Everything ``exec`` needs for one container: argv, full environment, folder."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    netns: str | None = None
    """The network namespace it runs in (entered as ``ip netns exec`` would)."""
    user: RunAs | None = None
    """Who it runs as (``ambient.runtime.security``); None: as the mesh (its own processes)."""
    hide: tuple[Path, ...] = ()
    """Folders covered by an empty tmpfs in its mount namespace (the mesh's state...)."""


def resolve_field_path(pod: PodRun, path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` for ``pod``, as kubelet gives it."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node,
        "spec.serviceAccountName": pod.service_account,
        "status.podIP": pod.ip,
        "status.podIPs": pod.ip,
        "status.hostIP": pod.host_ip,
        "status.hostIPs": pod.host_ip,
    }
    if path in simple:
        return simple[path]
    maps = {"metadata.labels": pod.labels, "metadata.annotations": pod.annotations}
    if path in maps:
        return _format_map(maps[path])
    if path.endswith("']") and "['" in path:
        base, key = path[:-2].split("['", 1)
        if base in maps:
            return maps[base].get(key, "")
    known = ", ".join([*simple, "metadata.labels['KEY']", "metadata.annotations['KEY']"])
    raise PodSpecError(pod, None, f"unsupported fieldRef.fieldPath {path!r} (supported: {known})")


def _format_map(values: Mapping[str, str]) -> str:
    # kubelet: one key="value" per line, keys sorted, values Go-quoted (JSON is close enough).
    return "\n".join(f"{k}={json.dumps(values[k], ensure_ascii=False)}" for k in sorted(values))


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_env(pod: PodRun, home: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Level 1 for a pod's container: ``PATH``, ``HOME``, ``HOSTNAME`` (see the module docs)."""
    source = os.environ if environ is None else environ
    return {"PATH": source.get("PATH") or DEFAULT_PATH, "HOME": home, "HOSTNAME": pod.name}


def inherited_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The supervisor's environment (``os.environ`` by default) without ``*_PROXY`` variables."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.upper().endswith("_PROXY")}


def pod_env(pod: PodRun) -> dict[str, str]:
    """The pod-level variables every container gets (level 2 of the module docs)."""
    env = {
        "POD_IP": pod.ip,
        "POD_NAME": pod.name,
        "POD_NAMESPACE": pod.namespace,
        "SERVICE_ACCOUNT": pod.service_account,
        "NODE_NAME": pod.node,
    }
    if pod.proxy:
        env["ALL_PROXY"] = pod.proxy
        env["all_proxy"] = pod.proxy
    if pod.connect_proxy:
        connect = pod.connect_proxy
        env["HTTPS_PROXY"] = env["https_proxy"] = env["grpc_proxy"] = connect
        env["GRPC_PROXY_EXP"] = connect.split("://", 1)[-1]
        env["NO_PROXY"] = env["no_proxy"] = "localhost"
    env.update(pod.extra_env)
    return env


def _declared_env(pod: PodRun, container: Container) -> dict[str, str]:
    """Levels 2 and 3: the variables kubelet would set, and ``$(VAR)`` sees."""
    base = pod_env(pod)
    defined: dict[str, str] = {}
    lookup = ChainMap(defined, base)
    for var in container.env:
        if var.field_path is not None:
            try:
                defined[var.name] = resolve_field_path(pod, var.field_path)
            except PodSpecError as exc:
                raise PodSpecError(pod, container.name, f"env {var.name}: {exc}") from None
        else:
            defined[var.name] = expand(var.value, lookup)
    return {**base, **defined}


def container_env(
    pod: PodRun,
    container: Container,
    *,
    inherited: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
) -> dict[str, str]:
    """The full environment of ``container``'s process (see the module docs): a pod's
    (``run_as`` given) or one of the mesh's own processes."""
    base = inherited_env(inherited) if run_as is None else base_env(pod, run_as.home, inherited)
    return {**base, **_declared_env(pod, container)}


def container_argv(pod: PodRun, container: Container) -> tuple[str, ...]:
    """``command`` + ``args`` with ``$(VAR)`` expanded; args alone if there is no command."""
    raw = (*container.command, *container.args)
    if not raw:
        raise PodSpecError(
            pod,
            container.name,
            "no command: set command (and args); locally there is no image entrypoint",
        )
    variables = _declared_env(pod, container)
    return tuple(expand(part, variables) for part in raw)


def plan_launch(
    pod: PodRun,
    container: Container,
    *,
    inherited: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    hide: tuple[Path, ...] = (),
) -> ContainerLaunch:
    """Argv, env and folder for ``container``, checking the folder and executable exist,
    and that the folder is not one ``hide`` takes away from it."""
    argv = container_argv(pod, container)
    env = container_env(pod, container, inherited=inherited, run_as=run_as)
    cwd = pod.base_dir
    if container.working_dir:
        cwd = pod.base_dir / container.working_dir
    if not cwd.is_dir():
        raise PodSpecError(pod, container.name, f"working directory {cwd} does not exist")
    resolved = cwd.resolve()
    for hidden in hide:
        if resolved == hidden or hidden in resolved.parents:
            raise PodSpecError(
                pod,
                container.name,
                f"working directory {cwd} is inside {hidden}, a folder of the mesh that "
                "pods do not see (its state); move the manifests or the --state-dir",
            )
    program = argv[0]
    if "/" in program:
        path = cwd / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PodSpecError(
                pod, container.name, f"command {program!r} is not an executable file (in {cwd})"
            )
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise PodSpecError(pod, container.name, f"command {program!r} not found on PATH")
    return ContainerLaunch(
        argv=argv, env=FrozenMap(env), cwd=cwd, netns=pod.netns, user=run_as, hide=hide
    )
