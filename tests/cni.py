"""Calling the CNI plugin as a container runtime does (shared by the unit and kube tests)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

HOST_PYTHON = "/usr/bin/python3"
"""The node's python3, which runs the installed plugin (``#!/usr/bin/python3 -IS``)."""

Result = tuple[int, Any, str]


def invoke_plugin(
    binary: Path, command: str, config: Any, env: dict[str, str] | None = None
) -> Result:
    """Run the plugin as a runtime does: ``CNI_*`` environment only, the configuration on
    stdin; returns (exit status, stdout decoded as JSON or None if empty, stderr)."""
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    done = subprocess.run(
        [str(binary)],
        input=stdin,
        env={"CNI_COMMAND": command, "CNI_PATH": str(binary.parent), **(env or {})},
        capture_output=True,
        timeout=30,
        check=False,
    )
    out = done.stdout.decode()
    return done.returncode, json.loads(out) if out.strip() else None, done.stderr.decode()


def runtime_config(conflist: dict[str, Any], plugin_type: str, prev: Any) -> dict[str, Any]:
    """The stdin a runtime (libcni) gives the plugin ``plugin_type`` of ``conflist``: its
    entry with the list's ``name`` and ``cniVersion``, and the previous plugin's result."""
    entry = next(p for p in conflist["plugins"] if p.get("type") == plugin_type)
    config = {**entry, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
    if prev is not None:
        config["prevResult"] = prev
    return config
