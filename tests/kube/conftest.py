"""One dev cluster (etcd + kube-apiserver + controller-manager + scheduler) for the whole run.

The binaries are built by ``make kube-bins`` before pytest (so the long first build
prints its progress in CI logs); run directly, the fixture builds them, printing
progress to the terminal past pytest's capture. The components die with this
process even on ``kill -9`` (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ambient.devcluster import DevCluster, GoNotFound, Options, up
from ambient.devcluster.build import binaries_if_built


def _progress(message: str) -> None:
    print(f"[dev-cluster] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    if binaries_if_built() is None:
        _progress("binaries not built yet (make kube-bins): building them now")
    folder = tmp_path_factory.mktemp("kube") / "cluster"
    try:
        cluster = up(folder, Options(tie_to_parent=True, progress=_progress))
    except GoNotFound as err:
        pytest.skip(f"cannot build the dev cluster: {err}")
    yield cluster
    cluster.down()


class Kubectl:
    """The dev cluster's kubectl (its admin kubeconfig), run with a bounded time."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done


@pytest.fixture(scope="session")
def kubectl(dev_cluster: DevCluster) -> Kubectl:
    return Kubectl(dev_cluster.kubectl)


def processes_mentioning(folder: Path) -> list[str]:
    """Command lines of live processes whose arguments mention ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(str(folder).encode() in arg for arg in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found
