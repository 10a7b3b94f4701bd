"""The ambient index of a Kubernetes cluster's objects (``ControlPlane(..., cluster=True)``).

``ambient.kube`` feeds the control plane the objects an API server serves, one
change at a time. What differs from the folder mode's index, and why:

- Addresses are the API server's: a pod's is its ``status.podIP`` (written by its
  kubelet), a Service's its ``spec.clusterIP`` (allocated by the API server);
  nothing is allocated here. A pod without an IP yet, a finished pod (phase
  ``Succeeded``/``Failed``: its IP may already be another pod's) and a host-network
  pod are no workloads. Istio's ambient index skips the first two too, and marks
  the third ``HOST_NETWORK``, which ztunnel never looks up by address; the workload
  API here has no network mode, so it is left out.
- Two objects claiming one address are not refused as in a folder (the cluster is
  the truth, and an IP can be reused before the old pod's deletion is seen): both
  are indexed, and lookups by address prefer pods, then by uid.
- Deployments are not expanded (ReplicaSets make the pods), and a waypoint Gateway
  stands for no generated objects: ``ambient.kube`` creates its Deployment, Service
  and ServiceAccount in the cluster, and they come back as ordinary objects.
- A pod's health is its ``Ready`` condition (``PodStatus.ready``).
- A node's address is the ``status.hostIP`` most of its pods report (the lowest
  address on a tie), so the incremental and the full build agree.
- Pods are not kept sorted: nothing is allocated in their order, and re-sorting
  10,000 keys for each new pod is what an incremental index must avoid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from ambient.config.configset import ConfigSet
from ambient.config.resources import Pod
from ambient.controlplane.allocate import AllocationKey
from ambient.controlplane.expand import ScheduledPod
from ambient.controlplane.index import MeshIndex, _Groups
from ambient.state.workload import IPAddress

__all__ = ["ClusterIndex", "is_workload_pod"]


def _ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_workload_pod(pod: Pod) -> bool:
    """Whether a pod read from an API server is a workload (see the module docstring)."""
    return (
        _ip(pod.status.pod_ip) is not None and not pod.status.terminal and not pod.spec.host_network
    )


class ClusterIndex(MeshIndex):
    """``MeshIndex`` over a cluster's objects (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hosts: dict[tuple[str, str], tuple[str, IPAddress]] = {}  # pod -> node, hostIP
        self._on_node: dict[str, dict[IPAddress, int]] = {}  # node -> hostIP -> pods reporting it

    def _expand(self, config: ConfigSet) -> tuple[ConfigSet, tuple[str, ...]]:
        return config, ()

    def _admits(self, pod: Pod) -> bool:
        return is_workload_pod(pod)

    def _addresses_of(
        self, groups: _Groups, pods: Mapping[tuple[str, str], ScheduledPod]
    ) -> dict[AllocationKey, IPAddress]:
        addresses: dict[AllocationKey, IPAddress] = {}
        for key, entry in pods.items():
            ip = _ip(entry.pod.status.pod_ip)
            if ip is not None:
                addresses[AllocationKey("Pod", *key)] = ip
        for svc in groups["Service"]:
            ip = None if svc.spec.headless else _ip(svc.spec.cluster_ip)
            if ip is not None:
                addresses[AllocationKey("Service", svc.meta.namespace, svc.meta.name)] = ip
        return addresses

    def _readdress(
        self,
        groups: _Groups,
        pods: dict[tuple[str, str], ScheduledPod],
        dirty: set[tuple[str, str]],
    ) -> tuple[dict[tuple[str, str], ScheduledPod], dict[AllocationKey, IPAddress]]:
        addresses = self._addresses
        for key in dirty:
            holder = AllocationKey("Pod", *key)
            entry = pods.get(key)
            ip = None if entry is None else _ip(entry.pod.status.pod_ip)
            if addresses.get(holder) == ip:
                continue
            if addresses is self._addresses:
                addresses = dict(addresses)
            if ip is None:
                del addresses[holder]
            else:
                addresses[holder] = ip
        return pods, addresses

    def _nodes_of(
        self,
        addresses: Mapping[AllocationKey, IPAddress],
        pods: Mapping[tuple[str, str], ScheduledPod],
        dirty: AbstractSet[tuple[str, str]] | None,
    ) -> Mapping[str, IPAddress]:
        if dirty is None:
            self._hosts.clear()
            self._on_node.clear()
        touched = False
        for key in pods.keys() if dirty is None else dirty:
            entry = pods.get(key)
            host = None if entry is None else _ip(entry.pod.status.host_ip)
            now = None if entry is None or host is None else (entry.pod.spec.node_name, host)
            if self._hosts.get(key) == now:
                continue
            touched = True
            before = self._hosts.pop(key, None)
            if before is not None:
                counts = self._on_node[before[0]]
                counts[before[1]] -= 1
                if not counts[before[1]]:
                    del counts[before[1]]
                if not counts:
                    del self._on_node[before[0]]
            if now is not None:
                self._hosts[key] = now
                counts = self._on_node.setdefault(now[0], {})
                counts[now[1]] = counts.get(now[1], 0) + 1
        if dirty is not None and not touched:
            return self.snapshot.nodes
        return {
            node: min(counts, key=lambda ip: (-counts[ip], ip.version, ip))
            for node, counts in sorted(self._on_node.items())
        }

    def _sorted_pods(
        self, pods: dict[tuple[str, str], ScheduledPod]
    ) -> dict[tuple[str, str], ScheduledPod]:
        return pods
