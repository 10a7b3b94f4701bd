"""This product's kubelet (``ambient.kubelet``) against the dev cluster, in the test's process.

``node`` starts a ``NodeKubelet`` for a node of the test's own (a unique name, a
``NoSchedule`` taint of its own so that other tests' pods are never scheduled there)
with loopback pod addresses (``host_addresses=False``: nothing is added to this
host's interfaces; the API server takes loopback pod IPs, only EndpointSlices refuse
them). Its pods are real processes. After the test the kubelet stops (the Node goes
NotReady) and the Node is deleted. Workloads of the test tolerate every taint and
select the node by ``kubernetes.io/hostname``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ambient.devcluster import DevCluster
from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.kube.kinds import NAMESPACE, NODE
from ambient.kubelet.kubelet import NodeKubelet, NodeOptions
from ambient.kubelet.node import FIELD_MANAGER

_names = itertools.count()
TAINT_KEY = "ambient.io/kubelet-test"


@dataclass
class KubeletNode:
    name: str
    kubelet: NodeKubelet
    client: KubeClient

    def placement(self) -> dict[str, Any]:
        """Pod spec fields that put a pod on this node (and only there)."""
        return {
            "nodeSelector": {"kubernetes.io/hostname": self.name},
            "tolerations": [{"operator": "Exists"}],
        }


@pytest.fixture
async def admin(dev_cluster: DevCluster) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_config(ClusterTarget(dev_cluster.kubeconfig)))
    yield client
    await client.close()


@pytest.fixture
async def namespace(admin: KubeClient) -> AsyncIterator[str]:
    name = f"kl-{os.getpid() % 10000}-{next(_names)}"
    await admin.create(
        NAMESPACE.path(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    await admin.delete(NAMESPACE.path(None, name))


def node_options(tmp_path: Path, **overrides: Any) -> NodeOptions:
    return NodeOptions(
        internal_ip="127.0.0.1",
        state_root=tmp_path / "state",
        base_dir=tmp_path,
        host_addresses=False,
        renew_interval=overrides.pop("renew_interval", 1.0),
        **overrides,
    )


@pytest.fixture
async def node(dev_cluster: DevCluster, tmp_path: Path) -> AsyncIterator[KubeletNode]:
    name = f"kl-node-{os.getpid() % 10000}-{next(_names)}"
    client = KubeClient(
        load_config(ClusterTarget(dev_cluster.kubeconfig)), field_manager=FIELD_MANAGER
    )
    taint = {"key": TAINT_KEY, "value": name, "effect": "NoSchedule"}
    kubelet = NodeKubelet(client, name, node_options(tmp_path, taints=(taint,)))
    await kubelet.start()
    try:
        yield KubeletNode(name, kubelet, client)
    finally:
        await kubelet.stop()
        try:
            await client.delete(NODE.path(None, name))
        except KeyError:
            pass
        except KubeError as err:
            if err.code != 404:
                raise
        await client.close()
