"""The kubelet's local socket: what ``ambient exec`` and ``ambient status`` ask a host's nodes.

JSON over HTTP on a Unix socket in the state folder (mode 0600: the host's user that
runs the nodes, as ``ambient exec`` runs commands as a pod). Each Node records the
socket's path in its annotation ``ambient.io/kubelet-socket``; a command on another
host finds no such file and says so. Routes:

- ``GET /nodes``                    the nodes served here, with the API server's URL
- ``GET /pod?namespace=&name=``     a pod of one of them: address, node, environment,
                                    working folder and network namespace
- ``GET /status``                   readiness of the control plane (if here), the
                                    nodes and their pods
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ambient.httpd import AdminServer, Request
from ambient.local.api import json_route, serve_unix
from ambient.local.backend import Refused

__all__ = ["KubeletApi"]


class KubeletApi:
    """Serves the host's kubelets on a Unix socket (see the module docstring)."""

    def __init__(
        self,
        cluster: str,
        pods: Callable[[str, str], Mapping[str, Any] | None],
        nodes: Callable[[], list[str]],
        status: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        self.cluster = cluster
        self._pods = pods
        self._nodes = nodes
        self.path = ""

        async def node_list(_request: Request) -> dict[str, Any]:
            return {"cluster": self.cluster, "nodes": self._nodes()}

        async def pod(request: Request) -> Mapping[str, Any]:
            namespace = request.query.get("namespace", "")
            name = request.query.get("name", "")
            found = self._pods(namespace, name)
            if found is None:
                nodes = ", ".join(self._nodes())
                raise Refused(
                    f"pod {namespace}/{name} does not run on this host's nodes ({nodes})", 404
                )
            return found

        async def status_(_request: Request) -> dict[str, Any]:
            return await status()

        self.server = AdminServer(
            {
                "/nodes": json_route(node_list),
                "/pod": json_route(pod),
                "/status": json_route(status_),
            }
        )

    async def start(self, path: str) -> None:
        await serve_unix(self.server, path)
        self.path = path

    async def close(self) -> None:
        await self.server.close()
