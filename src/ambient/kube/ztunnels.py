"""Finding a node's ztunnel through the cluster, for ``ambient zc --kubeconfig``.

istioctl reaches a node's ztunnel as a pod of the ztunnel DaemonSet on that node.
Here a node's ztunnel admin endpoint (``/config_dump``, Istio's port 15000) is, in
this order:

1. the pod labelled ``app=ztunnel`` in ``istio-system`` bound to the node and running
   with an IP: ``http://<podIP>:15000`` (ztunnel as a DaemonSet, ``ambient install
   --profile ambient`` in part 2);
2. the Node's annotation ``ambient.io/ztunnel-admin: HOST:PORT``, which a node agent
   that runs ztunnel as a host process (``ambient up --kubeconfig``, part 2) writes
   when it registers the Node.

A node with neither is reported with what was looked for. Without a node, every
node found either way is asked (the first answer gives the mesh view, the
certificates of all are gathered, as the folder mode's ``zc`` does). The admin
endpoint is plain HTTP and must be reachable from where the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from ambient.install.manifests import NAMESPACE
from ambient.kube.api import KubeClient, KubeError
from ambient.kube.kinds import NODE, POD

__all__ = [
    "ADMIN_ANNOTATION",
    "ZTUNNEL_LABEL",
    "ZtunnelEndpoint",
    "config_dumps",
    "ztunnel_endpoints",
]

ADMIN_ANNOTATION = "ambient.io/ztunnel-admin"
ZTUNNEL_LABEL = "app=ztunnel"
ADMIN_PORT = 15000


@dataclass(frozen=True)
class ZtunnelEndpoint:
    node: str
    url: str  # the admin base URL
    source: str  # "pod <ns>/<name>" or "node annotation"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def ztunnel_endpoints(client: KubeClient, node: str | None) -> list[ZtunnelEndpoint]:
    """The ztunnel admin endpoints of ``node`` (None: of every node), pods first."""
    params = {"labelSelector": ZTUNNEL_LABEL}
    if node is not None:
        params["fieldSelector"] = f"spec.nodeName={node}"
    pods, _ = await client.list(POD.path(NAMESPACE), params)
    found: dict[str, ZtunnelEndpoint] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        where, ip = spec.get("nodeName"), status.get("podIP")
        if where and ip and status.get("phase") == "Running" and where not in found:
            name = pod["metadata"]["name"]
            url = f"http://{_address(ip, ADMIN_PORT)}"
            found[where] = ZtunnelEndpoint(where, url, f"pod {NAMESPACE}/{name}")
    if node is not None:
        try:
            nodes = [await client.get(NODE.path(None, node))]
        except KubeError as err:
            if err.code != 404:
                raise
            nodes = []
    else:
        nodes, _ = await client.list(NODE.path())
    for item in nodes:
        meta = item.get("metadata") or {}
        value = (meta.get("annotations") or {}).get(ADMIN_ANNOTATION)
        if value and meta.get("name") not in found:
            found[meta["name"]] = ZtunnelEndpoint(
                meta["name"], f"http://{value}", "node annotation"
            )
    if node is not None and node not in found:
        raise KubeError(
            f"no ztunnel found for node {node}: no running pod labelled {ZTUNNEL_LABEL} in "
            f"{NAMESPACE} on it, and the Node {'does not exist' if not nodes else 'has no ' + ADMIN_ANNOTATION + ' annotation'}"
        )
    return [found[name] for name in sorted(found)]


async def config_dumps(
    endpoints: list[ZtunnelEndpoint],
    timeout: float = 5.0,
    *,
    failures: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Each endpoint's ``/config_dump``; ``KubeError`` naming the first that fails, or, when
    ``failures`` is given, each failure appended there and that node left out (a view of
    the whole mesh, such as the dashboard's, must survive a node that is down)."""
    dumps = []
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
        for endpoint in endpoints:
            url = f"{endpoint.url}/config_dump"
            try:
                answer = await http.get(url)
                answer.raise_for_status()
                dumps.append(answer.json())
            except (httpx.HTTPError, ValueError) as err:
                reason = f"cannot read node {endpoint.node}'s ztunnel at {url} ({endpoint.source}): {err}"
                if failures is None:
                    raise KubeError(reason) from None
                failures.append(reason)
    return dumps
