"""A Node's registration and heartbeat, as a kubelet keeps them.

- **Registration** (``NodeRegistration.register``): the Node is created if absent,
  its labels (``kubernetes.io/os=linux``, ``kubernetes.io/arch``,
  ``kubernetes.io/hostname``) and this kubelet's annotations server-side applied
  (field manager ``ambient-kubelet``), then its status through ``/status``:
  ``Ready`` True (``KubeletReady``) with ``MemoryPressure``, ``DiskPressure`` and
  ``PIDPressure`` False, ``capacity``/``allocatable`` (the host's CPUs, memory and
  ephemeral storage, 110 pods), ``addresses`` (``InternalIP``, ``Hostname``),
  ``nodeInfo`` and ``daemonEndpoints`` (port 0: there is no kubelet API to call).
  It then waits for ``spec.podCIDR``: the controller-manager's node IPAM allocates it
  (``--allocate-node-cidrs``, as the dev cluster runs it) and pods get their
  addresses from it.
- **Heartbeat**: the Lease ``kube-node-lease/<node>`` (``leaseDurationSeconds`` 40,
  owned by the Node so it goes with it) is renewed every 10 s; the status (with its
  ``lastHeartbeatTime``) every minute, as a kubelet reports it when nothing changed
  (the node-lifecycle controller reads the Lease).
- **Shutdown** (``NodeRegistration.shutdown``): ``Ready`` becomes False
  (``KubeletNotReady``, "kubelet is shutting down"), as a kubelet's graceful
  shutdown reports it; the node-lifecycle controller then taints the Node
  ``not-ready`` and marks its pods not ready.
- **One kubelet per Node**: a Node whose Lease is still fresh and whose
  ``ambient.io/kubelet`` annotation names another process is refused: two hosts
  must not run pods as the same node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ambient import __version__
from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import LEASE, NODE
from ambient.kubelet.podstatus import timestamp

__all__ = [
    "FIELD_MANAGER",
    "KUBELET_ANNOTATION",
    "LEASE_NAMESPACE",
    "NodeError",
    "NodeRegistration",
    "host_facts",
    "node_status",
]

log = logging.getLogger("ambient.kubelet")

FIELD_MANAGER = "ambient-kubelet"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_INTERVAL = 10.0
STATUS_INTERVAL = 60.0
PODS_CAPACITY = "110"
KUBELET_ANNOTATION = "ambient.io/kubelet"
"""``host/pid``: the process that runs the node (refuses a second one)."""
SOCKET_ANNOTATION = "ambient.io/kubelet-socket"
"""Where this node's kubelet answers ``ambient exec`` (a Unix socket on its host)."""
POD_CIDR_TIMEOUT = 30.0


class NodeError(RuntimeError):
    """The Node cannot be registered (taken by another kubelet, no podCIDR...)."""


def _micro(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


def _memory_ki() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


@dataclass(frozen=True)
class HostFacts:
    """What a Node says about the host it runs on."""

    cpus: int
    memory_ki: int
    storage_ki: int
    arch: str
    machine_id: str
    boot_id: str
    kernel: str
    os_image: str


def host_facts(storage: Path) -> HostFacts:
    """This host's CPUs, memory, the free space under ``storage``, identity and OS."""
    existing = next((p for p in (storage, *storage.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    return HostFacts(
        cpus=os.cpu_count() or 1,
        memory_ki=_memory_ki(),
        storage_ki=usage.total // 1024,
        arch=_ARCH.get(platform.machine(), platform.machine()),
        machine_id=_read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        kernel=platform.release(),
        os_image=_os_image(),
    )


def _condition(kind: str, value: bool, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if value else "False",
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def node_status(
    facts: HostFacts,
    internal_ip: str,
    hostname: str,
    *,
    ready: bool,
    version: str,
    previous: Mapping[str, Any] | None = None,
    message: str = "",
) -> dict[str, Any]:
    """The Node's ``status`` (see the module docstring); transition times are kept from
    ``previous`` (the status as read) while a condition's value stays."""
    now = timestamp()
    before = {
        str(c.get("type")): c
        for c in (previous or {}).get("conditions") or []
        if isinstance(c, Mapping)
    }
    conditions = [
        _condition(
            "MemoryPressure",
            False,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            now,
        ),
        _condition(
            "DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now
        ),
        _condition(
            "PIDPressure",
            False,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            now,
        ),
        _condition(
            "Ready",
            ready,
            "KubeletReady" if ready else "KubeletNotReady",
            message or ("kubelet is posting ready status" if ready else "kubelet is shutting down"),
            now,
        ),
    ]
    for condition in conditions:
        old = before.get(condition["type"])
        if old is not None and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = old.get("lastTransitionTime") or now
    resources = {
        "cpu": str(facts.cpus),
        "memory": f"{facts.memory_ki}Ki",
        "ephemeral-storage": f"{facts.storage_ki}Ki",
        "pods": PODS_CAPACITY,
    }
    return {
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": hostname},
        ],
        "capacity": resources,
        "allocatable": dict(resources),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": facts.machine_id,
            "systemUUID": facts.machine_id,
            "bootID": facts.boot_id,
            "kernelVersion": facts.kernel,
            "osImage": facts.os_image,
            "containerRuntimeVersion": f"ambient://{__version__}",
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": facts.arch,
        },
    }


def _parse_micro(text: str) -> float | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


class NodeRegistration:
    """One Node of this host: register, heartbeat, go NotReady (see the module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        name: str,
        internal_ip: str,
        *,
        storage: Path,
        annotations: Mapping[str, str] | None = None,
        taints: tuple[Mapping[str, str], ...] = (),
        renew_interval: float = RENEW_INTERVAL,
    ) -> None:
        """``taints``: registered with the Node, as kubelet's ``--register-with-taints``."""
        self.client = client
        self.taints = [dict(t) for t in taints]
        self.renew_interval = renew_interval
        self.name = name
        self.internal_ip = internal_ip
        self.identity = f"{socket.gethostname()}/{os.getpid()}"
        self.annotations = {KUBELET_ANNOTATION: self.identity, **(annotations or {})}
        self.facts = host_facts(storage)
        self.uid = ""
        self.pod_cidr = ""
        self.version = "v0.0.0"
        self._status: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    def _metadata(self) -> dict[str, Any]:
        spec = {"taints": self.taints} if self.taints else {}
        return {
            "spec": spec,
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": self.facts.arch,
                    "kubernetes.io/hostname": self.name,
                },
                "annotations": dict(self.annotations),
            },
        }

    async def register(self) -> dict[str, Any]:
        """Create or take over the Node, report it Ready, wait for its podCIDR."""
        try:
            info = await self.client.get("/version")
            self.version = str(info.get("gitVersion") or self.version)
        except KubeError:
            pass
        await self._check_not_taken()
        node = await self.client.apply(NODE.path(None, self.name), self._metadata())
        self.uid = node["metadata"]["uid"]
        await self.report(ready=True, previous=node.get("status"))
        await self.renew()
        self.pod_cidr = await self._pod_cidr(node)
        result: dict[str, Any] = node
        log.info(
            "node %s registered (InternalIP %s, podCIDR %s)",
            self.name,
            self.internal_ip,
            self.pod_cidr,
        )
        return result

    async def _check_not_taken(self) -> None:
        try:
            node = await self.client.get(NODE.path(None, self.name))
            lease = await self.client.get(LEASE.path(LEASE_NAMESPACE, self.name))
        except KubeError as err:
            if err.code == 404:
                return
            raise
        holder = ((node.get("metadata") or {}).get("annotations") or {}).get(KUBELET_ANNOTATION)
        spec = lease.get("spec") or {}
        renewed = _parse_micro(str(spec.get("renewTime") or ""))
        duration = float(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        if holder and holder != self.identity and renewed is not None:
            age = time.time() - renewed
            if age < duration and _alive_elsewhere(holder):
                raise NodeError(
                    f"node {self.name} is run by another kubelet ({KUBELET_ANNOTATION}: "
                    f"{holder}, Lease renewed {age:.0f}s ago): stop it, or use another node name"
                )

    async def _pod_cidr(self, node: dict[str, Any]) -> str:
        cidr = str((node.get("spec") or {}).get("podCIDR") or "")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POD_CIDR_TIMEOUT
        while not cidr:
            if loop.time() > deadline:
                raise NodeError(
                    f"node {self.name} got no spec.podCIDR within {POD_CIDR_TIMEOUT:g}s: the "
                    "controller-manager must allocate them (--allocate-node-cidrs "
                    "--cluster-cidr=10.244.0.0/16, as scripts/dev-cluster runs it)"
                )
            await asyncio.sleep(0.1)
            node = await self.client.get(NODE.path(None, self.name))
            cidr = str((node.get("spec") or {}).get("podCIDR") or "")
        return cidr

    async def report(
        self, *, ready: bool, previous: Mapping[str, Any] | None = None, message: str = ""
    ) -> None:
        """Write the status (Ready or not) through ``/status``."""
        status = node_status(
            self.facts,
            self.internal_ip,
            self.name,
            ready=ready,
            version=self.version,
            previous=previous if previous is not None else self._status,
            message=message,
        )
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name}}
        answer = await self.client.apply(
            NODE.path(None, self.name, "status"), {**body, "status": status}
        )
        self._status = answer.get("status") or status

    async def renew(self) -> None:
        """Apply the node's Lease with a fresh ``renewTime``."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}
                ],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro(time.time()),
            },
        }
        await self.client.apply(LEASE.path(LEASE_NAMESPACE, self.name), body)

    def start_heartbeat(self) -> None:
        """Renew the Lease every 10 s and the status every minute, until ``shutdown``."""
        self._task = asyncio.ensure_future(self._heartbeat())

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        last_status = loop.time()
        failing = False
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                await self.renew()
                if loop.time() - last_status >= STATUS_INTERVAL:
                    await self.report(ready=True)
                    last_status = loop.time()
                if failing:
                    log.info("node %s: heartbeat written again", self.name)
                failing = False
            except KubeError as err:
                if not failing:
                    log.warning("node %s: heartbeat failed: %s", self.name, err)
                failing = True

    async def shutdown(self) -> None:
        """Stop the heartbeat and report the node not ready."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.report(ready=False)
            log.info("node %s reported NotReady", self.name)
        except KubeError as err:
            log.warning("node %s: could not report NotReady: %s", self.name, err)


def _alive_elsewhere(holder: str) -> bool:
    """Whether ``host/pid`` may still run: on another host we cannot tell (assume so);
    on this host, whether that pid lives."""
    host, _, pid = holder.rpartition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
