"""An unprivileged ``ambient up`` (run here as ``nobody``) hides its state folder from its pods.

Every pod then runs as the mesh's own uid on the host; where unprivileged user
namespaces work, each container gets a user and mount namespace of its own in
which the mesh's folders are covered, and sees the ids it asked for. A probe pod
tries every key, socket and ``/proc`` back door (``tests/e2e/isolation.py``).
(Its own module: the root-mode modules keep a mesh up until they end.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Mesh, clean_env
from tests.e2e.isolation import assert_refused, pod_says, run_probe, secret_targets
from tests.e2e.test_isolation import open_folder, write_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts `up` as another user: needs root"),
]

NOBODY_PYTHON = Path("/usr/bin/python3")
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def _unprivileged_unavailable() -> str | None:
    if not NOBODY_PYTHON.exists():
        return f"needs {NOBODY_PYTHON} (a Python other users can run) to run `up` as nobody"
    probe = subprocess.run(
        [*AS_NOBODY, "unshare", "--user", "--map-current-user", "--mount", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"unprivileged user namespaces are refused here: {probe.stderr.strip()}"
    return None


def test_an_unprivileged_up_hides_its_state_from_its_pods() -> None:
    reason = _unprivileged_unavailable()
    if reason:
        pytest.skip(reason)
    folder = open_folder()
    try:
        config = write_config(folder)
        state = folder / "state"
        state.mkdir(mode=0o700)
        os.chown(state, 65534, 65534)
        site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
        env = {
            **clean_env(),
            "PYTHONPATH": f"{REPO / 'src'}:{site}",
            "HOME": str(folder),
        }
        mesh = Mesh(
            config,
            state,
            folder / "up.log",
            runner=(*AS_NOBODY, str(NOBODY_PYTHON), "-m", "ambient"),
            env=env,
        ).start(wait=90)
        try:
            status = mesh.status()
            assert status["isolation"]["secure"], status["isolation"]
            assert status["warnings"] == []
            targets = secret_targets(mesh)
            report = run_probe(mesh, folder, "probe", targets)
            # The ids it asked for, seen inside its user namespace (the host's are nobody).
            assert (report["uid"], report["gid"]) == (65534, 65534)
            assert_refused(report)
            rooted = run_probe(mesh, folder, "probe-root", targets, security={"runAsUser": 0})
            assert rooted["uid"] == 0
            assert_refused(rooted)
            ids = pod_says(
                mesh,
                folder,
                "ids",
                ["sh", "-c", 'echo "IDS $(id -u) $(id -g)"; exec sleep infinity'],
                "IDS ",
                security={"runAsUser": 4321, "runAsGroup": 4322},
            )
            assert ids == "4321 4322"  # inside its user namespace; nobody on the host
        finally:
            mesh.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
