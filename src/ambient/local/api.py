"""The control API of a running ``ambient up``: JSON over HTTP on a Unix socket.

The socket lives in the state folder (mode 0600), so only its owner drives the
mesh. The same routes whichever process model runs the mesh (``MeshBackend``):

- ``GET /status``                      readiness of every component
- ``GET /pods``                        pods with address, node and exec environment
- ``GET /system-pods``                 the mesh's own processes as pods (``local.systempods``)
- ``GET /resources?kind=&namespace=``  loaded objects (``ambient get``)
- ``GET /manifests``                   every object as its manifest and origin (``ambient analyze``)
- ``GET /nodes``                       ztunnels and their admin addresses
- ``GET /config_dump?node=``           a ztunnel's view (``ambient ztunnel-config``)
- ``POST /apply``  ``{"text": ..., "filename": ...}``
- ``POST /delete`` ``{"text": ..., "filename": ...}``
- ``POST /label``  ``{"kind", "namespace", "name", "key", "value" (null removes)}``

Errors come back as ``{"error": "..."}`` with status 400 (bad input) or 404.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ambient.httpd import AdminServer, Request, Response
from ambient.local.backend import MeshBackend, Refused

__all__ = ["ControlApi", "json_body", "json_route", "remove_socket", "serve_unix"]


def json_route(
    call: Callable[[Request], Awaitable[Any]],
) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        try:
            return Response.json(await call(request))
        except Refused as exc:
            return Response.json({"error": str(exc)}, exc.status)
        except ValueError as exc:  # a body that is not JSON
            return Response.json({"error": f"bad request: {exc}"}, 400)

    return handler


async def serve_unix(server: AdminServer, path: str) -> None:
    """Serve ``server`` on the Unix socket ``path``, readable by its owner only."""
    remove_socket(path)
    old = os.umask(0o177)
    try:
        await server.start_unix(path)
    finally:
        os.umask(old)


def remove_socket(path: str) -> None:
    """Remove a stale socket file (a previous run's), if any."""
    Path(path).unlink(missing_ok=True)


class ControlApi:
    """Serves a :class:`MeshBackend` on its state folder's control socket."""

    def __init__(self, mesh: MeshBackend) -> None:
        self.mesh = mesh
        self.server = AdminServer(
            {
                "/status": json_route(lambda r: mesh.status()),
                "/pods": json_route(lambda r: mesh.pods()),
                "/system-pods": json_route(lambda r: mesh.system_pods()),
                "/resources": json_route(
                    lambda r: mesh.resources(r.query.get("kind", ""), r.query.get("namespace"))
                ),
                "/manifests": json_route(lambda r: mesh.manifests()),
                "/nodes": json_route(lambda r: mesh.node_list()),
                "/config_dump": json_route(lambda r: mesh.config_dumps(r.query.get("node"))),
                "POST /apply": json_route(lambda r: mesh.apply(json_body(r))),
                "POST /delete": json_route(lambda r: mesh.delete(json_body(r))),
                "POST /label": json_route(lambda r: mesh.label(json_body(r))),
            }
        )

    async def start(self) -> str:
        path = str(self.mesh.state.socket_path)
        await serve_unix(self.server, path)
        return path

    async def close(self) -> None:
        await self.server.close()
        self.mesh.state.socket_path.unlink(missing_ok=True)


def json_body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise Refused("the request body must be a JSON object")
    return body
