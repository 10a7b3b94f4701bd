"""A node's ztunnel as a pod of that node: ``istio-system/ztunnel-<node>``.

Istio runs ztunnel as a DaemonSet; here each node's kubelet makes the pod itself
(bound to its node, as the DaemonSet controller binds its pods, and owned by the
Node so that it goes with it) and runs it like any other pod of the node, so:

- ``ambient zc --kubeconfig`` finds it as istioctl does (``app=ztunnel`` in
  ``istio-system`` on the node, admin on ``<podIP>:15000``);
- its identity is Kubernetes': ServiceAccount ``istio-system/ztunnel``, and the
  kubelet gives it what Istio's DaemonSet mounts — the ``istio-token`` (a
  TokenRequest of that account, audience ``istio-ca``, bound to the pod's uid,
  12 h, renewed at 80 % of its life, as a kubelet renews projected tokens) and the
  control plane's root (``root-cert.pem``) — as files in the node's state folder
  (``nodes/<node>/ztunnel/``), named in its arguments (there are no volume mounts
  here);
- its container is ``ambient ztunnel`` with the node's name and its own address
  from the downward API, ``privileged`` (it listens on its pods' addresses and, with
  ``--netns``, enters their namespaces), readiness on ``:15021/healthz/ready``.

Whatever the network mode, the ztunnel pod lives in the host's network namespace
with an address of its node's range (its pods' listeners are made there, or inside
their namespaces), and no proxy variables. Every other pod of the node waits, before
its containers start, until its ztunnel has its listeners (``/config_dump``), as
istio-cni holds a pod's sandbox until ztunnel has it; at most
:data:`LISTENER_TIMEOUT`, then it starts anyway (logged).

A pod object that differs from what this kubelet would make (another state folder,
control plane or version: the annotation ``ambient.io/ztunnel-spec``) is deleted and
made again, as a DaemonSet rolls its pods.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import POD, SERVICE_ACCOUNT
from ambient.kubelet.podspec import KubePod

__all__ = [
    "LISTENER_TIMEOUT",
    "ZTUNNEL_NAMESPACE",
    "NodeZtunnel",
    "ZtunnelConfig",
    "ztunnel_pod",
]

log = logging.getLogger("ambient.kubelet")

ZTUNNEL_NAMESPACE = "istio-system"
ZTUNNEL_ACCOUNT = "ztunnel"
SPEC_ANNOTATION = "ambient.io/ztunnel-spec"
CA_AUDIENCE = "istio-ca"
TOKEN_SECONDS = 12 * 3600
RENEW_AT = 0.8
LISTENER_TIMEOUT = 30.0
ADMIN_PORT, METRICS_PORT, READINESS_PORT = 15000, 15020, 15021


def pod_name(node: str) -> str:
    return f"ztunnel-{node}"


@dataclass(frozen=True)
class ZtunnelConfig:
    """What a node's ztunnel is told: where the control plane is, where its files are."""

    ca_address: str
    xds_address: str
    files: Path
    """The folder of its token and root (``nodes/<node>/ztunnel``)."""
    log_level: str = "info"
    node_agent_socket: Path | None = None
    """``--netns``: the node agent's socket for this node."""


def ztunnel_pod(node: str, node_uid: str, config: ZtunnelConfig) -> dict[str, Any]:
    """The ztunnel pod of ``node`` (see the module docstring)."""
    args = [
        "ztunnel",
        "--node",
        "$(NODE_NAME)",
        "--node-ip",
        "$(POD_IP)",
        "--control-plane",
        config.ca_address,
        "--xds",
        config.xds_address,
        "--token-file",
        str(config.files / "istio-token"),
        "--ca-root",
        str(config.files / "root-cert.pem"),
        "--log-level",
        config.log_level,
    ]
    if config.node_agent_socket is not None:
        args += ["--node-agent-socket", str(config.node_agent_socket)]
    container: dict[str, Any] = {
        "name": "istio-proxy",
        "image": "ambient/ztunnel",
        "command": [sys.executable, "-m", "ambient"],
        "args": args,
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        "ports": [
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            {"name": "ztunnel-stats", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": READINESS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
            "periodSeconds": 1,
        },
        "securityContext": {"privileged": True},
    }
    spec = {
        "nodeName": node,
        "serviceAccountName": ZTUNNEL_ACCOUNT,
        "priorityClassName": "system-node-critical",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [{"operator": "Exists"}],
        "containers": [container],
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node),
            "namespace": ZTUNNEL_NAMESPACE,
            "labels": {"app": "ztunnel", "istio.io/dataplane-mode": "none"},
            "annotations": {SPEC_ANNOTATION: digest},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}
            ],
        },
        "spec": spec,
    }


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


class NodeZtunnel:
    """The ztunnel pod of one node, its files, and the wait for its listeners."""

    def __init__(
        self,
        client: KubeClient,
        node: str,
        config: ZtunnelConfig,
        root_pem: Callable[[], Awaitable[bytes]],
    ) -> None:
        self.client = client
        self.node = node
        self.config = config
        self.root_pem = root_pem
        self.name = pod_name(node)
        self.ip = ""
        self._token_uid = ""
        self._renewal: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)

    def is_ztunnel(self, pod: KubePod) -> bool:
        return pod.namespace == ZTUNNEL_NAMESPACE and pod.name == self.name

    async def ensure(self, node_uid: str) -> str:
        """Create the pod (again, if the one there was made differently); its uid."""
        body = ztunnel_pod(self.node, node_uid, self.config)
        path = POD.path(ZTUNNEL_NAMESPACE, self.name)
        try:
            current = await self.client.get(path)
        except KubeError as err:
            if err.code != 404:
                raise
            current = None
        if current is not None:
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            same = (
                annotations.get(SPEC_ANNOTATION) == body["metadata"]["annotations"][SPEC_ANNOTATION]
            )
            if same and not (current.get("metadata") or {}).get("deletionTimestamp"):
                return str(current["metadata"]["uid"])
            log.info("node %s: replacing its ztunnel pod (made by another kubelet run)", self.node)
            uid = current["metadata"]["uid"]
            await self.client.delete(
                path,
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": uid}},
            )  # fmt: skip
            await _gone(self.client, path, uid)
        made = await self.client.create(POD.path(ZTUNNEL_NAMESPACE), body)
        log.info("node %s: ztunnel pod %s/%s created", self.node, ZTUNNEL_NAMESPACE, self.name)
        return str(made["metadata"]["uid"])

    # -- before its container starts -------------------------------------------------------

    async def write_files(self, uid: str) -> None:
        """Write the token of the pod ``uid`` and the control plane's root; keep the token
        fresh from now on."""
        files = self.config.files
        files.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(files / "root-cert.pem", await self.root_pem())
        expires = await self._write_token(uid)
        if self._renewal is not None:
            self._renewal.cancel()
        self._renewal = asyncio.ensure_future(self._renew(uid, expires))
        self._token_uid = uid

    @property
    def token_file(self) -> Path:
        return self.config.files / "istio-token"

    @property
    def root_file(self) -> Path:
        return self.config.files / "root-cert.pem"

    async def prepare(self, pod: KubePod, ip: str) -> None:
        """Before the ztunnel's container starts: its address, and its files for this pod."""
        self.ip = ip
        if self._token_uid != pod.uid:
            await self.write_files(pod.uid)

    async def _write_token(self, uid: str) -> float:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [CA_AUDIENCE],
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": uid,
                },
            },
        }
        path = SERVICE_ACCOUNT.path(ZTUNNEL_NAMESPACE, ZTUNNEL_ACCOUNT, "token")
        answer = await self.client.create(path, body)
        _write_private(self.token_file, answer["status"]["token"].encode())
        return time.time() + TOKEN_SECONDS

    async def _renew(self, uid: str, expires: float) -> None:
        issued = time.time()
        while True:
            await asyncio.sleep(max(1.0, (expires - issued) * RENEW_AT - (time.time() - issued)))
            try:
                expires = await self._write_token(uid)
                issued = time.time()
            except KubeError as err:
                log.warning("node %s: ztunnel token not renewed (retrying): %s", self.node, err)
                await asyncio.sleep(10.0)

    async def wait_listener(self, pod: KubePod, ip: str) -> None:
        """Until the node's ztunnel lists its listeners for ``pod`` (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTENER_TIMEOUT
        delay = 0.02
        while loop.time() < deadline:
            if self.ip and await self._listens_for(pod, ip):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        log.warning(
            "pod %s/%s starts before its ztunnel listens for it (%gs)",
            pod.namespace,
            pod.name,
            LISTENER_TIMEOUT,
        )

    async def config_dump(self) -> dict[str, Any] | None:
        """The ztunnel's ``/config_dump`` (None if it does not answer)."""
        try:
            answer = await self._http.get(f"http://{self.ip}:{ADMIN_PORT}/config_dump")
            dump = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        return dump if isinstance(dump, dict) else None

    async def _listens_for(self, pod: KubePod, ip: str) -> bool:
        dump = await self.config_dump()
        return dump is not None and listening(dump, pod.namespace, pod.name, ip)

    async def close(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        await self._http.aclose()


def listening(dump: dict[str, Any], namespace: str, name: str, ip: str) -> bool:
    """Whether a ztunnel's ``/config_dump`` shows its listeners for the pod at ``ip``: the
    SOCKS5 one, or in-pod (``--netns``) its redirection, or none needed (not enrolled).
    A waypoint's pod has no listeners of its own: the node proxy hosts the waypoint on
    the pod's address, so the pod may start once the node proxy runs it (``waypoints``)."""
    if any(
        w.get("namespace") == namespace and w.get("name") == name and w.get("address") == ip
        for w in dump.get("waypoints") or []
    ):
        return True
    workload = next(
        (
            w
            for w in dump.get("workloads", [])
            if w.get("namespace") == namespace
            and w.get("name") == name
            and ip in (w.get("workloadIps") or [])
        ),
        None,
    )
    if workload is None:
        return False
    listeners = (dump.get("listeners") or {}).get(workload.get("uid"))
    if not listeners:
        return False
    if "socks5" in listeners:
        return bool(listeners["socks5"])
    return bool(listeners.get("redirected")) or workload.get("protocol") != "HBONE"


async def _gone(client: KubeClient, path: str, uid: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            current = await client.get(path)
        except KubeError as err:
            if err.code == 404:
                return
            raise
        if current["metadata"]["uid"] != uid:
            return
        await asyncio.sleep(0.1)
