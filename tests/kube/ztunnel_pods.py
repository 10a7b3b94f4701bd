"""A ztunnel's pod and credentials, made by a kubelet stand-in (part 1 has no kubelet).

In a cluster a ztunnel is a pod of ServiceAccount ``istio-system/ztunnel`` on its node;
the kubelet runs it, reports its status and mounts its API token (a TokenRequest bound
to the pod). ``ZtunnelPods`` does that kubelet's part through the API server with the
admin credentials, as ``KubeletStandIn`` does for other pods:

- ``start(node)`` creates the pod bound to ``node``, writes its status (Running,
  Ready; a pod IP only if given), and requests the pod's *API* token bound to it —
  what the kubelet would project at ``/var/run/secrets/kubernetes.io/serviceaccount``;
- ``ZtunnelPod.kubeconfig`` is a kubeconfig holding only that token: the ztunnel's own
  credentials (not admin), with which it requests its CA token itself
  (``TokenRequestSource``, audience ``istio-ca``), as ``ambient ztunnel --kubeconfig``;
- ``stop(pod)`` deletes it for good, as a kubelet once its containers stopped.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.kube.kinds import POD, SERVICE_ACCOUNT
from ambient.kube.tokenrequest import TokenRequestSource

NAMESPACE = "istio-system"
ACCOUNT = "ztunnel"
_names = itertools.count()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path, user: str) -> Path:
    """A kubeconfig for the cluster of ``admin_kubeconfig`` that authenticates with ``token``."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


async def request_token(
    client: KubeClient,
    *,
    pod: str | None,
    uid: str | None = None,
    namespace: str = NAMESPACE,
    account: str = ACCOUNT,
    audience: str | None = None,
    seconds: int = 3600,
) -> str:
    """A TokenRequest of ``namespace/account`` (bound to ``pod`` if given) by ``client``."""
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if audience is not None:
        spec["audiences"] = [audience]
    if pod is not None:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod}
        if uid is not None:
            spec["boundObjectRef"]["uid"] = uid
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    answer = await client.create(SERVICE_ACCOUNT.path(namespace, account, "token"), body)
    token: str = answer["status"]["token"]
    return token


@dataclass
class ZtunnelPod:
    """A ztunnel's pod and its own API credentials (see the module docstring)."""

    node: str
    name: str
    uid: str
    kubeconfig: Path
    client: KubeClient  # the ztunnel's own credentials

    def token_source(self, **kwargs: Any) -> TokenRequestSource:
        """Its CA token, requested with its own credentials (``TokenRequestSource``)."""
        return TokenRequestSource(self.client, pod_name=self.name, pod_uid=self.uid, **kwargs)


class ZtunnelPods:
    """The kubelet stand-in's part for ztunnel pods (see the module docstring)."""

    def __init__(self, admin: KubeClient, admin_kubeconfig: Path, folder: Path) -> None:
        self.admin = admin
        self.admin_kubeconfig = admin_kubeconfig
        self.folder = folder
        self.pods: list[ZtunnelPod] = []

    async def start(
        self, node: str, *, name: str | None = None, ip: str | None = None
    ) -> ZtunnelPod:
        name = name or f"ztunnel-{node}-{os.getpid() % 1000}-{next(_names)}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "ztunnel"}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": ACCOUNT,
                "containers": [{"name": "istio-proxy", "image": "ztunnel"}],
            },
        }
        created = await self.admin.create(POD.path(NAMESPACE), body)
        await self.write_status(name, ip)
        uid = created["metadata"]["uid"]
        token = await request_token(self.admin, pod=name, uid=uid)  # the projected API token
        path = token_kubeconfig(
            self.admin_kubeconfig, token, self.folder / f"{name}.kubeconfig", "ztunnel"
        )
        pod = ZtunnelPod(node, name, uid, path, KubeClient(load_config(ClusterTarget(path))))
        self.pods.append(pod)
        return pod

    async def write_status(self, name: str, ip: str | None) -> None:
        """What a kubelet reports of a running ztunnel pod."""
        status: dict[str, Any] = {
            "phase": "Running",
            "startTime": _now(),
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": _now()}
                for t in ("Initialized", "ContainersReady", "Ready")
            ],
        }
        if ip is not None:
            status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
        await self.admin.patch(
            POD.path(NAMESPACE, name, "status"),
            {"status": status},
            "application/strategic-merge-patch+json",
        )

    async def stop(self, pod: ZtunnelPod) -> None:
        """Delete the pod for good (its tokens stop being valid)."""
        try:
            await self.admin.delete(
                POD.path(NAMESPACE, pod.name),
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
            )
        except KubeError as err:
            if err.code != 404:
                raise

    async def close(self) -> None:
        for pod in self.pods:
            await self.stop(pod)
            await pod.client.close()
        self.pods.clear()
