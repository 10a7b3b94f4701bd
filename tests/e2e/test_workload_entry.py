"""A WorkloadEntry (a VM this host does not run) is reached over HBONE at <address>:15008."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Mesh, clean_env
from tests.pki import write_plugin_ca

pytestmark = pytest.mark.slow

VM_ADDRESS = "127.50.0.1"
VM_IDENTITY = "spiffe://cluster.local/ns/shop/sa/vm"
LEGACY = f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: vm, namespace: shop}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: legacy-vm, namespace: shop}}
spec:
  address: {VM_ADDRESS}
  serviceAccount: vm
  labels: {{app: legacy}}
---
apiVersion: v1
kind: Service
metadata: {{name: legacy, namespace: shop}}
spec:
  selector: {{app: legacy}}
  ports:
  - {{name: http, port: 8080, targetPort: 8080}}
"""


def listeners_on(address: str) -> list[str]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return sorted(
        p[3]
        for line in out.splitlines()
        if len(p := line.split()) >= 4 and p[3].startswith(f"{address}:")
    )


def test_enrolled_workload_entry_is_reached_over_hbone(tmp_path: Path) -> None:
    config = tmp_path / "shop"
    shutil.copytree(REPO / "examples" / "shop", config)
    write_plugin_ca(config / "cacerts")
    (config / "legacy.yaml").write_text(LEGACY)
    vm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.e2e.vm_peer",
            str(config / "cacerts"),
            VM_ADDRESS,
            VM_IDENTITY,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=clean_env(),
    )
    mesh = Mesh(config, tmp_path / "state", tmp_path / "up.log", single_process=True)
    try:
        assert vm.stdout is not None and vm.stdout.readline().strip() == "LISTENING"
        mesh.start()
        workloads = mesh.workloads()
        assert workloads["legacy-vm"]["protocol"] == "HBONE"
        assert workloads["legacy-vm"]["workloadIps"] == [VM_ADDRESS]
        # nothing is started or bound for it by the mesh: the only listener on its
        # address is the VM peer's own HBONE port (no SOCKS5 15080, no app)
        assert listeners_on(VM_ADDRESS) == [f"{VM_ADDRESS}:15008"]
        answer = mesh.curl("http://legacy:8080/hello")
        assert answer == {
            "app": "legacy-vm",
            "peer_identity": "spiffe://cluster.local/ns/shop/sa/web",
            "authority": f"{VM_ADDRESS}:8080",
        }
    finally:
        mesh.stop()
        assert vm.stdin is not None
        vm.stdin.close()
        vm.wait(10)
        if vm.stdout is not None:
            vm.stdout.close()
