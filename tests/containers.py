"""A manifest's container as the command line it runs, without a container runtime.

What a kubelet does to a container before it starts it, for the parts this project's
manifests use: the downward API's values into the environment, ``$(VAR)`` in
``command``/``args`` expanded from it, and each volume's ``mountPath`` standing for a
folder of the test's (every argument under a mount point is rewritten to that folder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    """The container's environment: literal values, and ``fieldRef`` paths from ``fields``
    (a missing one is a KeyError naming it: the test did not say what the pod would be)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def container_argv(
    container: dict[str, Any], fields: dict[str, str], mounts: dict[str, Path]
) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` of the container: ``command + args`` with ``$(VAR)`` expanded and
    every path under a mount point of ``mounts`` (mountPath → local folder) rewritten."""
    env = container_env(container, fields)
    mount_points = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    unknown = set(mounts) - set(mount_points)
    if unknown:
        raise KeyError(f"not mount points of {container['name']}: {sorted(unknown)}")

    def rewrite(arg: str) -> str:
        arg = _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), arg)
        for point, local in mounts.items():
            if arg == point or arg.startswith(point + "/"):
                return str(local) + arg[len(point) :]
        return arg

    return [rewrite(a) for a in [*container["command"], *container.get("args", [])]], env


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or DaemonSet."""
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def only_container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_template(obj)["containers"]
    return dict(container)
