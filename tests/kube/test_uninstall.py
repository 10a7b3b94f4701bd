"""ambient uninstall removes everything install applied (and the objects of its CRDs)."""

from __future__ import annotations

import pytest

from ambient.devcluster import DevCluster
from tests.kube.conftest import Kubectl
from tests.kube.test_install import GOOD, MESH_KINDS, ambient, crd_names

pytestmark = [pytest.mark.slow, pytest.mark.kube]


def test_uninstall_removes_what_install_applied(dev_cluster: DevCluster, kubectl: Kubectl) -> None:
    kubeconfig = str(dev_cluster.kubeconfig)
    assert ambient("install", "--kubeconfig", kubeconfig).returncode == 0
    kubectl("apply", "-f", "-", stdin=GOOD)
    done = ambient("uninstall", "--kubeconfig", kubeconfig)
    assert done.returncode == 0, done.stderr
    left = kubectl("get", "crd", "-o", "name").stdout.split()
    assert [
        n for n in crd_names() if f"customresourcedefinition.apiextensions.k8s.io/{n}" in left
    ] == []
    for obj in (*MESH_KINDS, "clusterrolebinding/ambient-istiod"):
        gone = kubectl("get", obj, check=False)
        assert gone.returncode != 0, obj
    policy = kubectl(
        "get", "validatingadmissionpolicy", "safe-upgrades.gateway.networking.k8s.io", check=False
    )
    assert policy.returncode != 0 and "NotFound" in policy.stderr
    again = ambient("uninstall", "--kubeconfig", kubeconfig)  # nothing left to remove: still fine
    assert again.returncode == 0, again.stderr
