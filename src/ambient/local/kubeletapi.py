"""The kubelet's local socket: what ``ambient exec`` and ``ambient status`` ask a host's nodes.

JSON over HTTP on a Unix socket in the state folder (mode 0600: the host's user that
runs the nodes, as ``ambient exec`` runs commands as a pod). Each Node records the
socket's path in its annotation ``ambient.io/kubelet-socket``; a command on another
host finds no such file and says so. Routes:

- ``GET /nodes``                    the nodes served here, with the API server's URL
- ``GET /pod?namespace=&name=``     a pod of one of them: address, node, environment,
                                    working folder and network namespace
- ``GET /logs?namespace=&name=&uid=&container=[&tail=][&since=][&offset=]``
                                    one read of a pod's container log
                                    (``ambient.kubelet.logs``): ``{"lines", "offset"}``,
                                    the last ``tail`` lines since ``since`` (ISO time),
                                    or those appended after byte ``offset``
- ``GET /podport?namespace=&name=&uid=&port=&path=``
                                    one ``GET`` of a mesh pod's metrics or readiness
                                    port, made from inside the pod's network
                                    (``ambient.kubelet.podmetrics``): ``{"status",
                                    "content_type", "text"}``; other pods, ports and
                                    paths are refused (403)
- ``GET /status``                   readiness of the control plane (if here), the
                                    nodes and their pods

Every route is the same privilege: ``exec`` runs commands as a pod from what
``/pod`` says, so reading a pod's log (``nodes/proxy`` to a kubelet, as exec) is
given to the same callers and to no one else; ``/podport`` (the API server's pod
proxy, ``nodes/proxy`` as well) likewise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from ambient.httpd import AdminServer, Request
from ambient.local.api import json_route, serve_unix
from ambient.local.backend import Refused
from ambient.runtime.podlogs import LogSource, read_lines

__all__ = ["KubeletApi"]


class KubeletApi:
    """Serves the host's kubelets on a Unix socket (see the module docstring)."""

    def __init__(
        self,
        cluster: str,
        pods: Callable[[str, str], Mapping[str, Any] | None],
        nodes: Callable[[], list[str]],
        status: Callable[[], Awaitable[dict[str, Any]]],
        logs: Callable[[str, str, str, str], LogSource] | None = None,
        pod_port: Callable[[str, str, str, int, str], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        """``logs(namespace, name, uid, container)``: that container's log on one of
        the nodes here; raises ``LookupError`` (with ``status``) if there is none.
        ``pod_port(namespace, name, uid, port, path)``: one read of a mesh pod's port
        (``ambient.kubelet.podmetrics.read_pod_port``), ``LookupError`` likewise."""
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

        async def pod_logs(request: Request) -> dict[str, Any]:
            if logs is None:
                raise Refused("this host's nodes serve no logs", 404)
            q = request.query
            count, offset = _integer(q, "tail"), _integer(q, "offset")
            since = None
            if q.get("since"):
                try:
                    since = datetime.fromisoformat(q["since"])
                except ValueError:
                    raise Refused(f"since: not an ISO time: {q['since']!r}") from None
                if since.tzinfo is None:
                    raise Refused("since: the time needs its UTC offset")
            args = (q.get(k, "") for k in ("namespace", "name", "uid", "container"))
            try:
                source = logs(*args)
            except LookupError as err:
                raise Refused(str(err), getattr(err, "status", 404)) from None
            lines, at = await asyncio.to_thread(
                read_lines, source, count=count, since=since, offset=offset
            )
            return {"lines": lines, "offset": at}

        async def pod_port_(request: Request) -> dict[str, Any]:
            if pod_port is None:
                raise Refused("this host's nodes serve no pod ports", 404)
            q = request.query
            port = _integer(q, "port")
            if port is None:
                raise Refused("port: missing")
            namespace, name, uid = (q.get(k, "") for k in ("namespace", "name", "uid"))
            try:
                return await pod_port(namespace, name, uid, port, q.get("path", ""))
            except LookupError as err:
                raise Refused(str(err), getattr(err, "status", 404)) from None

        self.server = AdminServer(
            {
                "/nodes": json_route(node_list),
                "/pod": json_route(pod),
                "/logs": json_route(pod_logs),
                "/podport": json_route(pod_port_),
                "/status": json_route(status_),
            }
        )

    async def start(self, path: str) -> None:
        await serve_unix(self.server, path)
        self.path = path

    async def close(self) -> None:
        await self.server.close()


def _integer(query: Mapping[str, str], key: str) -> int | None:
    if not query.get(key):
        return None
    try:
        return int(query[key])
    except ValueError:
        raise Refused(f"{key}: not an integer: {query[key]!r}") from None
