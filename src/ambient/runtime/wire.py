"""``PodRun`` as JSON: how the control plane process tells ``ambient up``'s runtime what to run.

Explicit per type (no reflection): a field added to ``PodRun`` or ``Container`` must be
added here too, and ``tests/unit/runtime/test_wire.py`` checks the round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ambient.config.resources import Container, ContainerPort, EnvVar, SecurityContext
from ambient.runtime.spec import PodRun

__all__ = ["pod_run_from_json", "pod_run_to_json"]


def _security_to_json(sc: SecurityContext | None) -> dict[str, Any] | None:
    if sc is None:
        return None
    return {
        "runAsUser": sc.run_as_user,
        "runAsGroup": sc.run_as_group,
        "runAsNonRoot": sc.run_as_non_root,
        "supplementalGroups": list(sc.supplemental_groups),
        "privileged": sc.privileged,
    }


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _security_from_json(data: dict[str, Any] | None) -> SecurityContext | None:
    if data is None:
        return None
    non_root, privileged = data.get("runAsNonRoot"), data.get("privileged")
    return SecurityContext(
        run_as_user=_optional_int(data.get("runAsUser")),
        run_as_group=_optional_int(data.get("runAsGroup")),
        run_as_non_root=None if non_root is None else bool(non_root),
        supplemental_groups=tuple(int(g) for g in data.get("supplementalGroups", ())),
        privileged=None if privileged is None else bool(privileged),
    )


def _container_to_json(c: Container) -> dict[str, Any]:
    return {
        "name": c.name,
        "image": c.image,
        "command": list(c.command),
        "args": list(c.args),
        "env": [{"name": e.name, "value": e.value, "fieldPath": e.field_path} for e in c.env],
        "ports": [
            {"containerPort": p.container_port, "name": p.name, "protocol": p.protocol}
            for p in c.ports
        ],
        "workingDir": c.working_dir,
        "securityContext": _security_to_json(c.security_context),
    }


def _container_from_json(data: dict[str, Any]) -> Container:
    return Container(
        name=str(data["name"]),
        image=data.get("image"),
        command=tuple(str(a) for a in data.get("command", ())),
        args=tuple(str(a) for a in data.get("args", ())),
        env=tuple(
            EnvVar(str(e["name"]), str(e.get("value", "")), e.get("fieldPath"))
            for e in data.get("env", ())
        ),
        ports=tuple(
            ContainerPort(int(p["containerPort"]), str(p.get("name", "")), str(p["protocol"]))
            for p in data.get("ports", ())
        ),
        working_dir=data.get("workingDir"),
        security_context=_security_from_json(data.get("securityContext")),
    )


def pod_run_to_json(run: PodRun) -> dict[str, Any]:
    return {
        "namespace": run.namespace,
        "name": run.name,
        "uid": run.uid,
        "ip": run.ip,
        "containers": [_container_to_json(c) for c in run.containers],
        "node": run.node,
        "serviceAccount": run.service_account,
        "labels": dict(run.labels),
        "annotations": dict(run.annotations),
        "proxy": run.proxy,
        "connectProxy": run.connect_proxy,
        "extraEnv": dict(run.extra_env),
        "baseDir": str(run.base_dir),
        "hostIP": run.host_ip,
        "securityContext": _security_to_json(run.security_context),
    }


def pod_run_from_json(data: dict[str, Any]) -> PodRun:
    """The inverse of :func:`pod_run_to_json`; KeyError/ValueError on malformed input."""
    return PodRun(
        namespace=str(data["namespace"]),
        name=str(data["name"]),
        uid=str(data["uid"]),
        ip=str(data["ip"]),
        containers=tuple(_container_from_json(c) for c in data["containers"]),
        node=str(data["node"]),
        service_account=str(data["serviceAccount"]),
        labels={str(k): str(v) for k, v in data["labels"].items()},
        annotations={str(k): str(v) for k, v in data["annotations"].items()},
        proxy=data.get("proxy"),
        connect_proxy=data.get("connectProxy"),
        extra_env={str(k): str(v) for k, v in data["extraEnv"].items()},
        base_dir=Path(data["baseDir"]),
        host_ip=str(data["hostIP"]),
        security_context=_security_from_json(data.get("securityContext")),
    )
