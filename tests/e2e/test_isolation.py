"""Pods cannot read the mesh's keys nor reach its control sockets, in every mode of ``up``.

For each mode a probe pod (applied once the mesh is up) tries every private key
under the state folder (and the plug-in CA key), every control socket, and the
``/proc/PID/{environ,mem,root}`` of every process of the mesh; all must fail.
As root, pods run as 65534 unless their ``securityContext`` says otherwise,
``runAsUser: 0`` is root only in a user namespace, ``runAsNonRoot`` refuses
uid 0 with kubelet's message, and the state folder is 0700 with 0600 keys. The
unprivileged ``up``: ``test_isolation_unprivileged.py``; ``--netns``:
``tests/netns/test_isolation.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Mesh, wait_for
from tests.e2e.isolation import assert_refused, pod_says, run_probe, secret_targets
from tests.pki import write_plugin_ca

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs pods as other users: needs root"),
]

CONFIG = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      nodeName: node-2
      securityContext: {runAsUser: 4321, runAsGroup: 4322}
      containers:
      - name: web
        command: [sleep, infinity]
"""
NON_ROOT = """\
apiVersion: v1
kind: Pod
metadata: {name: rooted, namespace: shop}
spec:
  securityContext: {runAsNonRoot: true}
  containers:
  - name: app
    command: [sleep, infinity]
    securityContext: {runAsUser: 0}
"""


def open_folder() -> Path:
    """A folder other users can enter (pytest's tmp_path is 0700 root)."""
    folder = Path(tempfile.mkdtemp(prefix="ambient-iso-e2e-"))
    folder.chmod(0o755)
    return folder


def write_config(folder: Path, plugin_ca: bool = False) -> Path:
    config = folder / "config"
    config.mkdir(mode=0o755)
    (config / "mesh.yaml").write_text(CONFIG)
    if plugin_ca:  # Istio's plug-in files, as users keep them: world-readable
        cacerts = config / "cacerts"
        write_plugin_ca(cacerts)
        cacerts.chmod(0o755)
        for path in cacerts.iterdir():
            path.chmod(0o644)
    return config


@pytest.fixture(scope="module", params=["processes", "single-process"])
def mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    folder = open_folder()
    config = write_config(folder, plugin_ca=request.param == "processes")
    running = Mesh(
        config,
        folder / "state",
        folder / "up.log",
        single_process=request.param == "single-process",
    ).start(wait=60)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_pods_cannot_read_keys_or_reach_control_sockets(mesh: Mesh) -> None:
    cacerts = mesh.config_dir / "cacerts"
    targets = secret_targets(mesh, extra_keys=(cacerts / "ca-key.pem",))
    report = run_probe(mesh, mesh.config_dir.parent, "probe", targets)
    assert (report["uid"], report["gid"]) == (65534, 65534)
    assert_refused(report)
    rooted = run_probe(
        mesh, mesh.config_dir.parent, "probe-root", targets, security={"runAsUser": 0}
    )
    assert rooted["uid"] == 0  # root in its user namespace, nobody outside
    assert_refused(rooted)


def test_keys_are_0600_and_folders_0700_owned_by_the_mesh(mesh: Mesh) -> None:
    state = mesh.state_dir
    folders = [state, *(p for p in state.rglob("*") if p.is_dir())]
    assert {p: oct(p.stat().st_mode & 0o777) for p in folders if p.stat().st_mode & 0o077} == {}
    keys = [p for p in state.rglob("*") if p.name.endswith("key.pem")]
    assert keys and all(p.stat().st_mode & 0o777 == 0o600 for p in keys), keys
    assert {p.stat().st_uid for p in [*folders, *keys]} == {os.geteuid()}


def test_the_pods_user_is_its_security_context_user(mesh: Mesh) -> None:
    ids = pod_says(
        mesh,
        mesh.config_dir.parent,
        "ids",
        ["sh", "-c", 'echo "IDS $(id -u) $(id -g) $(id -G) $HOME $HOSTNAME"; exec sleep infinity'],
        "IDS ",
        security={"runAsUser": 4321, "runAsGroup": 4322},
    )
    assert ids == "4321 4322 4322 / ids"
    # the Deployment's pod-level securityContext (runAsUser 4321, runAsGroup 4322) too
    (web,) = mesh.state_dir.glob("logs/shop_web-*_web.log")
    status = [c for c in mesh.status()["components"] if c["name"].startswith("pod/shop/web-")]
    pid = int(status[0]["detail"].split("(pid ")[1].split(")")[0])
    uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:2]
    assert uids == ["4321", "4321"], web


def test_run_as_non_root_refuses_uid_0_with_kubelets_reason(mesh: Mesh) -> None:
    manifest = mesh.config_dir.parent / "rooted.yaml"
    manifest.write_text(NON_ROOT)
    mesh.ok("apply", "-f", str(manifest))

    def detail() -> str | None:
        for component in mesh.status()["components"]:
            if component["name"] == "pod/shop/rooted" and "Config" in component["detail"]:
                return str(component["detail"])
        return None

    text = wait_for("the pod's CreateContainerConfigError", detail, timeout=30)
    assert "(CreateContainerConfigError)" in text
    assert "container's runAsUser breaks non-root policy" in text
    assert "container: app)" in text
    mesh.ok("delete", "-f", str(manifest))
