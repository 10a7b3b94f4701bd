"""``PodRun`` as JSON: how the control plane process tells ``ambient up``'s runtime what to run.

Explicit per type (no reflection): a field added to ``PodRun`` or ``Container`` must be
added here too, and ``tests/unit/runtime/test_wire.py`` checks the round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ambient.config.resources import Container, ContainerPort, EnvVar
from ambient.runtime.spec import PodRun

__all__ = ["pod_run_from_json", "pod_run_to_json"]


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
    )
