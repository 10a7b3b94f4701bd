"""ambient uninstall removes everything install applied (and the objects of its CRDs)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import yaml

from ambient.devcluster import DevCluster
from ambient.install.apply import connect, uninstall
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


ORDER_OBJECTS = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: uninstall-order-agents, namespace: default}
spec:
  selector: {matchLabels: {app: uninstall-order-agents}}
  template:
    metadata: {labels: {app: uninstall-order-agents}}
    spec:
      nodeSelector: {ambient.test/no-such-node: "true"}
      containers: [{name: agent, image: ambient}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: uninstall-order-rbac, namespace: default}
rules: [{apiGroups: [apps], resources: [daemonsets], verbs: [get]}]
"""
HOLD = "ambient.test/hold"


def _agent_pod(owner_uid: str) -> str:
    """A pod of the DaemonSet (owned by it, held by a finalizer) that no node runs."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "uninstall-order-agent", "namespace": "default", "finalizers": [HOLD],
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "uninstall-order-agents",
                "uid": owner_uid, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "nodeSelector": {"ambient.test/no-such-node": "true"},
            "containers": [{"name": "agent", "image": "ambient"}],
        },
    })  # fmt: skip


def test_uninstall_deletes_rbac_only_after_the_workloads_pods_are_gone(
    dev_cluster: DevCluster, kubectl: Kubectl
) -> None:
    """A node agent decides on SIGTERM whether to remove the CNI plugin by looking at its
    DaemonSet, with its RBAC: uninstall deletes the DaemonSet in the foreground and waits
    until its pods are gone before it deletes the RBAC."""
    objects = list(yaml.safe_load_all(ORDER_OBJECTS))
    kubectl("apply", "-f", "-", stdin=ORDER_OBJECTS)
    uid = kubectl(
        "get", "ds", "uninstall-order-agents", "-o", "jsonpath={.metadata.uid}"
    ).stdout  # fmt: skip
    kubectl("create", "-f", "-", stdin=_agent_pod(uid))
    errors: list[BaseException] = []

    async def run() -> None:
        client = connect(dev_cluster.kubeconfig, None)
        try:
            await uninstall(client, [], [objects[1], objects[0]], lambda _: None, timeout=60)
        finally:
            await client.close()

    def thread_main() -> None:
        try:
            asyncio.run(run())
        except BaseException as err:  # reported by the test
            errors.append(err)

    worker = threading.Thread(target=thread_main)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not kubectl(
            "get", "pod", "uninstall-order-agent", "-o", "jsonpath={.metadata.deletionTimestamp}"
        ).stdout:  # fmt: skip
            assert time.monotonic() < deadline, "the DaemonSet's pod was never deleted"
            time.sleep(0.1)
        # the pod is terminating (held): the RBAC must still be there, uninstall waiting
        assert worker.is_alive(), errors
        assert kubectl("get", "role", "uninstall-order-rbac", check=False).returncode == 0
        assert (
            "deletionTimestamp"
            in kubectl("get", "ds", "uninstall-order-agents", "-o", "json").stdout
        )
    finally:
        kubectl(
            "patch", "pod", "uninstall-order-agent", "--type=json",
            "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]', check=False,
        )  # fmt: skip
        worker.join(timeout=90)
    assert not worker.is_alive() and errors == []
    for gone in (
        "role/uninstall-order-rbac",
        "ds/uninstall-order-agents",
        "pod/uninstall-order-agent",
    ):
        assert kubectl("get", gone, check=False).returncode != 0, gone
