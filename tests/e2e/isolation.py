"""A pod that tries to read the mesh's keys and reach its control sockets, and reports.

Shared by the isolation tests of every mode (``tests/e2e/test_isolation.py``,
``tests/netns/test_isolation.py``). The probe is applied *after* the mesh is up,
so that every key and socket it tries exists (the test checks that first): a
refusal then means the pod was kept out, not that it came too early.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

from tests.e2e.harness import Mesh, wait_for

PROBE = textwrap.dedent("""\
    import json, os, socket, sys
    out = {"uid": os.getuid(), "gid": os.getgid(), "results": {}}
    for target in sys.argv[1:]:
        how, _, path = target.partition(":")
        try:
            if how == "connect":
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(2)
                s.connect(path)
                s.close()
            else:
                with open(path, "rb") as f:
                    f.read(1)
            out["results"][target] = "ok"
        except OSError as exc:
            out["results"][target] = type(exc).__name__
    print("PROBE " + json.dumps(out), flush=True)
    import signal
    signal.pause()
""")


def mesh_pids(mesh: Mesh) -> list[int]:
    """``up``, its pod launchers, and its control plane and ztunnel processes."""
    pids = [mesh.pid]
    for component in mesh.status()["components"]:
        found = re.search(r"\(pid (\d+)\)", component["detail"])
        if found and not component["name"].startswith("pod/"):
            pids.append(int(found.group(1)))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"ambient.launcher.server" in cmdline and ppid == mesh.pid:
            pids.append(int(entry.name))
    return pids


def secret_targets(mesh: Mesh, extra_keys: tuple[Path, ...] = ()) -> list[str]:
    """Every private key and socket of the mesh, and its processes' ``/proc`` back doors."""
    state = mesh.state_dir
    keys = sorted(p for p in state.rglob("*") if p.name.endswith("key.pem") and p.is_file())
    keys += [k for k in extra_keys if k.is_file()]
    tokens = sorted(state.rglob("join-tokens.json"))
    info = json.loads((state / "mesh.json").read_text())
    sockets = {Path(info["socket"]), *state.rglob("*.sock")}
    for folder in {Path(info["socket"]).parent}:
        sockets.update(folder.glob("*.sock"))
    assert keys, f"no key files under {state}"
    assert Path(info["socket"]) in sockets and Path(info["socket"]).exists()
    targets = [f"read:{k}" for k in [*keys, *tokens]]
    targets += [f"connect:{s}" for s in sorted(sockets)]
    for pid in mesh_pids(mesh):
        targets += [f"read:/proc/{pid}/environ", f"read:/proc/{pid}/mem"]
        targets += [f"read:/proc/{pid}/root{k}" for k in keys[:2]]
    return targets


def pod_manifest(name: str, command: list[str], security: dict[str, Any] | None = None) -> str:
    """A pod in ``shop`` on node-1 (JSON is YAML)."""
    container: dict[str, Any] = {"name": "probe", "command": command}
    if security:
        container["securityContext"] = security
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"nodeName": "node-1", "containers": [container]},
    }
    return json.dumps(pod)


def pod_says(
    mesh: Mesh,
    folder: Path,
    name: str,
    command: list[str],
    marker: str,
    security: dict[str, Any] | None = None,
) -> str:
    """Apply a pod running ``command`` and return the rest of its first log line that starts
    with ``marker`` (the pod prints it, then sleeps: it is not restarted meanwhile)."""
    manifest = folder / f"{name}.yaml"
    manifest.write_text(pod_manifest(name, command, security))
    mesh.ok("apply", "-f", str(manifest))
    log = mesh.state_dir / "logs" / f"shop_{name}_probe.log"

    def said() -> str | None:
        try:
            text = log.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(marker):
                return line.removeprefix(marker)
        return None

    return wait_for(f"the pod {name} to say {marker!r} (log {log})", said, timeout=60)


def run_probe(
    mesh: Mesh, folder: Path, name: str, targets: list[str], security: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply a probe pod and return what it reported (its uid, gid and each attempt)."""
    said = pod_says(mesh, folder, name, ["python3", "-c", PROBE, *targets], "PROBE ", security)
    report: dict[str, Any] = json.loads(said)
    return report


def assert_refused(report: dict[str, Any]) -> None:
    reached = {t: r for t, r in report["results"].items() if r == "ok"}
    assert reached == {}, f"the pod reached: {sorted(reached)}"
    assert report["results"], "nothing was probed"
