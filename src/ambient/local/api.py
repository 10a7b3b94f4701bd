"""The control API of a running ``ambient up``: JSON over HTTP on a Unix socket.

The socket lives in the state folder (mode 0600), so only its owner drives the
mesh. Routes:

- ``GET /status``                      readiness of every component
- ``GET /pods``                        pods with address, node and exec environment
- ``GET /resources?kind=&namespace=``  loaded objects (``ambient get``)
- ``GET /nodes``                       ztunnels and their admin addresses
- ``GET /config_dump?node=``           a ztunnel's view (``ambient ztunnel-config``)
- ``POST /apply``  ``{"text": ..., "filename": ...}``
- ``POST /delete`` ``{"text": ..., "filename": ...}``
- ``POST /label``  ``{"kind", "namespace", "name", "key", "value" (null removes)}``

Errors come back as ``{"error": "..."}`` with status 400 (bad input) or 404.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ambient.config import ConfigError, load_text
from ambient.config.frozen import FrozenMap
from ambient.config.gateway import Gateway
from ambient.controlplane.source import NotAuthorized
from ambient.controlplane.waypoints import gateway_status
from ambient.httpd import AdminServer, Request, Response
from ambient.local.mesh import LocalMesh


class ControlApi:
    """Serves a :class:`LocalMesh` on its state folder's control socket."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self.server = AdminServer(
            {
                "/status": lambda r: Response.json(mesh.status()),
                "/pods": lambda r: Response.json(mesh.pods()),
                "/resources": self._resources,
                "/nodes": self._nodes,
                "/config_dump": self._config_dump,
                "POST /apply": self._apply,
                "POST /delete": self._delete,
                "POST /label": self._label,
            }
        )

    async def start(self) -> str:
        path = self.mesh.state.socket_path
        path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            await self.server.start_unix(str(path))
        finally:
            os.umask(old)
        return str(path)

    async def close(self) -> None:
        await self.server.close()
        self.mesh.state.socket_path.unlink(missing_ok=True)

    # -- routes --------------------------------------------------------------------

    def _resources(self, request: Request) -> Response:
        plane = self.mesh._plane()
        kind = request.query.get("kind", "").lower()
        namespace = request.query.get("namespace")
        items = []
        for obj in plane.config:
            if kind and obj.kind.lower() != kind:
                continue
            if namespace and getattr(obj.meta, "namespace", None) != namespace:
                continue
            item = _to_json(obj)
            if isinstance(obj, Gateway):
                snapshot = plane.snapshot
                item["status"] = gateway_status(
                    obj, snapshot.workloads, snapshot.services
                ).to_dict()
            items.append(item)
        return Response.json(items)

    def _nodes(self, _request: Request) -> Response:
        return Response.json(
            [
                {"name": n.name, "ip": n.ip, "admin": n.ztunnel.admin_addresses}
                for n in self.mesh.nodes.values()
            ]
        )

    def _config_dump(self, request: Request) -> Response:
        wanted = request.query.get("node")
        dumps = [
            n.ztunnel.config_dump()
            for n in self.mesh.nodes.values()
            if wanted is None or n.name == wanted
        ]
        if wanted is not None and not dumps:
            return Response.json({"error": f"no node named {wanted!r}"}, 404)
        return Response.json(dumps)

    def _apply(self, request: Request) -> Response:
        try:
            body = request.json()
            config = load_text(
                body.get("text", ""), body.get("filename", "<stdin>"), check_refs=False
            )
            return Response.json({"result": self.mesh.apply(config)})
        except (ConfigError, ValueError) as exc:
            return Response.json({"error": str(exc)}, 400)

    def _delete(self, request: Request) -> Response:
        try:
            body = request.json()
            config = load_text(
                body.get("text", ""), body.get("filename", "<stdin>"), check_refs=False
            )
            return Response.json({"result": self.mesh.delete(config)})
        except (ConfigError, ValueError) as exc:
            return Response.json({"error": str(exc)}, 400)

    def _label(self, request: Request) -> Response:
        try:
            body = request.json()
            self.mesh.label(
                str(body["kind"]),
                str(body.get("namespace") or "default"),
                str(body["name"]),
                str(body["key"]),
                None if body.get("value") is None else str(body["value"]),
            )
        except KeyError as exc:
            return Response.json({"error": f"missing field {exc}"}, 400)
        except (ValueError, LookupError, NotAuthorized, ConfigError) as exc:
            status = 404 if type(exc).__name__ == "NotFound" else 400
            return Response.json({"error": str(exc)}, status)
        return Response.json({"result": "labeled"})


def _to_json(value: Any) -> Any:
    """Frozen config objects as plain JSON (camelCase is not restored; this is for display)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, FrozenMap | dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
