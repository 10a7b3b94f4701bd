"""A mesh pod's metrics port read through its node, for ``ambient dashboard --kubeconfig``.

What the API server's pod proxy (``/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH``)
is to a Kubernetes operator outside the pod network: the pod is resolved through the
API server with the caller's kubeconfig (RBAC applies), then its node's kubelet socket
(``ambient.kube.podexec``, the one ``exec`` and ``logs`` use, with their gate) makes
the request from inside the pod's network (``ambient.kubelet.podmetrics``, which
serves only the mesh proxies' metrics and readiness ports).

A pod that the API server does not know, or whose node is not run by ``ambient up`` on
this host, is not an error here: ``None`` says "reach it directly" (a ztunnel
DaemonSet's pod, a node on another host, the control plane's own port).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlencode

from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import NODE, POD
from ambient.kube.podexec import SOCKET_ANNOTATION, kubelet_get

__all__ = ["read_through_node"]


async def read_through_node(
    client: KubeClient, namespace: str, name: str, port: int, path: str
) -> str | None:
    """The text pod ``namespace/name`` answers on ``port`` at ``path``, read by its node;
    None when its node cannot be asked from here (see the module docstring). ``KubeError``
    when the node refuses or the port does not answer 200."""
    try:
        pod = await client.get(POD.path(namespace, name))
    except KubeError as err:
        if err.code == 404:
            return None
        raise
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        return None
    try:
        node_obj = await client.get(NODE.path(None, node))
    except KubeError as err:
        if err.code == 404:
            return None
        raise
    socket = ((node_obj.get("metadata") or {}).get("annotations") or {}).get(SOCKET_ANNOTATION)
    if not socket:
        return None
    try:
        present = await asyncio.to_thread(Path(socket).exists)
    except PermissionError:
        present = True  # kubelet_get says why it is refused
    if not present:
        return None
    query = urlencode(
        {
            "namespace": namespace,
            "name": name,
            "uid": pod["metadata"].get("uid", ""),
            "port": str(port),
            "path": path,
        }
    )
    answer = await kubelet_get(node, socket, f"/podport?{query}")
    if not isinstance(answer, dict) or answer.get("status") != 200:
        status = answer.get("status") if isinstance(answer, dict) else answer
        raise KubeError(f"pod {namespace}/{name}:{port}{path} answered {status} (through {node})")
    return str(answer.get("text") or "")
