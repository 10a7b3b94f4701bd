"""``ambient exec --kubeconfig``: which pod, on which node, and that node's kubelet.

``POD`` or ``deploy/NAME`` is resolved through the API server as kubectl resolves
it: a Deployment's pods are those its selector picks, the first running one taken,
ready ones first (then the oldest). The pod's node is asked, through the kubelet
socket its Node names (annotation ``ambient.io/kubelet-socket``, a Unix socket on the
host that runs that node), for what a command needs to run as the pod: its
environment, working folder and network namespace. There is no kubelet API to call
over the network (``kubectl exec`` needs one): the command runs on the pod's host,
so a pod of a node on another host is refused with the host to run it on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ambient.httpclient import unix_request
from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import DEPLOYMENT, NODE, POD

__all__ = [
    "SOCKET_ANNOTATION",
    "exec_target",
    "kubelet_get",
    "kubelet_socket",
    "pick_pod",
    "selector_text",
]

SOCKET_ANNOTATION = "ambient.io/kubelet-socket"
KUBELET_ANNOTATION = "ambient.io/kubelet"
_DEPLOY = ("deploy", "deployment", "deployments", "deploy.apps", "deployments.apps")
_POD = ("", "pod", "pods", "po")


def selector_text(selector: Mapping[str, Any]) -> str:
    """A label selector (``matchLabels``/``matchExpressions``) as a ``labelSelector``."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def pick_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod kubectl would exec into: running, not being deleted; ready first, oldest."""
    live = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running"
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    live.sort(
        key=lambda p: (
            not _ready(p),
            str(p["metadata"].get("creationTimestamp", "")),
            p["metadata"]["name"],
        )
    )
    return live[0] if live else None


async def _resolve(client: KubeClient, namespace: str, target: str) -> dict[str, Any]:
    kind, _, name = target.rpartition("/")
    kind = kind.lower()
    if kind in _POD:
        try:
            pod: dict[str, Any] = await client.get(POD.path(namespace, name))
        except KubeError as err:
            if err.code == 404:
                raise KubeError(f"no pod {name!r} in namespace {namespace!r}") from None
            raise
        return pod
    if kind not in _DEPLOY:
        raise KubeError(f"cannot exec into {target!r}: use POD or deploy/NAME")
    try:
        deployment = await client.get(DEPLOYMENT.path(namespace, name))
    except KubeError as err:
        if err.code == 404:
            raise KubeError(f"no deployment {name!r} in namespace {namespace!r}") from None
        raise
    selector = selector_text((deployment.get("spec") or {}).get("selector") or {})
    pods, _ = await client.list(POD.path(namespace), {"labelSelector": selector})
    chosen = pick_pod(pods)
    if chosen is None:
        raise KubeError(f"deployment {namespace}/{name} has no running pod ({len(pods)} pod(s))")
    return chosen


async def exec_target(client: KubeClient, namespace: str, target: str) -> dict[str, Any]:
    """What ``ambient exec`` runs a command with, for ``target`` (see the module docstring)."""
    pod = await _resolve(client, namespace, target)
    meta = pod["metadata"]
    name = meta["name"]
    node, socket = await kubelet_socket(client, pod, "exec")
    answer = await kubelet_get(node, socket, f"/pod?namespace={namespace}&name={name}")
    if not isinstance(answer, dict) or answer.get("uid") != meta.get("uid"):
        raise KubeError(f"pod {namespace}/{name} is not the one node {node} runs (replaced?)")
    return answer


async def kubelet_socket(
    client: KubeClient, pod: Mapping[str, Any], command: str
) -> tuple[str, str]:
    """The node ``pod`` is bound to and its kubelet socket on this host; ``KubeError``
    saying why not (not scheduled, not run by ``ambient up``, on another host)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    namespace, name = meta.get("namespace", ""), meta["name"]
    node = spec.get("nodeName")
    if not node:
        raise KubeError(f"pod {namespace}/{name} is not scheduled to a node yet")
    try:
        node_obj = await client.get(NODE.path(None, node))
    except KubeError as err:
        if err.code == 404:
            raise KubeError(
                f"pod {namespace}/{name} is bound to node {node}, which does not exist"
            ) from None
        raise
    annotations = (node_obj.get("metadata") or {}).get("annotations") or {}
    socket = annotations.get(SOCKET_ANNOTATION)
    where = annotations.get(KUBELET_ANNOTATION, "")
    if not socket:
        raise KubeError(
            f"pod {namespace}/{name} runs on node {node}, which is not run by `ambient up` "
            f"(no {SOCKET_ANNOTATION} annotation)"
        )
    try:
        present = await asyncio.to_thread(Path(socket).exists)
    except PermissionError:
        raise KubeError(_refused(node, socket)) from None
    if not present:
        host = where.rpartition("/")[0] or "its host"
        raise KubeError(
            f"pod {namespace}/{name} runs on node {node}, whose kubelet is on {host}, not this "
            f"host ({socket} does not exist here): run ambient {command} there"
        )
    return node, socket


def _refused(node: str, socket: str) -> str:
    return (
        f"node {node}'s kubelet ({socket}): permission denied: only the user that runs "
        "its `ambient up` (or root) may exec into its pods or read their logs"
    )


async def kubelet_get(node: str, socket: str, query: str) -> Any:
    """``GET query`` on a node's kubelet socket: its answer, or ``KubeError`` with the
    node's reason (``code``: its HTTP status)."""
    try:
        status, answer = await unix_request(socket, "GET", query, timeout=10)
    except PermissionError:
        raise KubeError(_refused(node, socket), 403) from None
    except (OSError, TimeoutError) as err:
        raise KubeError(f"node {node}'s kubelet ({socket}) did not answer: {err}") from None
    if status != 200:
        message = answer.get("error") if isinstance(answer, dict) else answer
        raise KubeError(f"node {node}'s kubelet: {message}", status)
    return answer
