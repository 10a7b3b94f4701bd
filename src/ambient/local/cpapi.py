"""The control plane process's own socket: configuration changes in, the pod schedule out.

``ambient controlplane --api-socket PATH`` serves it (mode 0600). It is what
``kube-apiserver`` is to istiod and kubelet in Kubernetes, reduced to what one host
needs; ``ambient up`` (the default process model) is its only client:

- ``GET /resources``, ``GET /manifests``, ``POST /apply|/delete|/label``: as the mesh's control API
  (``ambient.local.api``), which forwards them here.
- ``GET /schedule?after=N``: the pods to run (``PodRun`` as JSON) and the nodes,
  with a ``generation`` that grows with every change of the index. With ``after``
  equal to the current generation the answer waits (up to ``wait`` seconds) for
  the next change: a long poll, so the runtime follows without busy polling.
- ``POST /health`` ``{"uid", "ready"}``: pod readiness from the runtime (the
  control plane then tracks health, so a pod is an endpoint only once ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any

from ambient.httpd import AdminServer, Request
from ambient.local.api import json_body, json_route, remove_socket, serve_unix
from ambient.local.backend import (
    Refused,
    apply_json,
    delete_json,
    label_json,
    manifests_json,
    resources_json,
)
from ambient.local.configops import MeshConfig
from ambient.local.kubelet import scheduled_runs
from ambient.runtime.wire import pod_run_to_json

__all__ = ["ControlPlaneApi"]

LONG_POLL = 20.0


class ControlPlaneApi:
    """Serves a control plane's ``MeshConfig`` to ``ambient up`` (see the module docstring)."""

    def __init__(
        self, config: MeshConfig, *, track_health: bool = False, wait: float = LONG_POLL
    ) -> None:
        """``track_health``: pods are endpoints only once ``/health`` reports them ready
        (else from the first report on)."""
        self.config = config
        self.wait = wait
        self.generation = 0
        self.boot = secrets.token_hex(4)  # tells the runtime this process restarted
        self._changed = asyncio.Condition()
        self._follow: asyncio.Task[None] | None = None
        self._health_tracked = track_health
        if track_health:
            config.plane.track_health()

        async def call(route: Any, request: Request) -> Any:
            return route(config, json_body(request))

        self.server = AdminServer(
            {
                "/resources": json_route(self._resources),
                "/manifests": json_route(self._manifests),
                "/schedule": json_route(self._schedule),
                "POST /apply": json_route(lambda r: call(apply_json, r)),
                "POST /delete": json_route(lambda r: call(delete_json, r)),
                "POST /label": json_route(lambda r: call(label_json, r)),
                "POST /health": json_route(self._health),
            }
        )
        self.path = ""

    async def start(self, path: Path) -> None:
        self.path = str(path)
        self._follow = asyncio.ensure_future(self._follow_plane())
        await serve_unix(self.server, self.path)

    async def close(self) -> None:
        await self.server.close()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        remove_socket(self.path)

    async def _follow_plane(self) -> None:
        subscription = self.config.plane.subscribe(None)
        try:
            async for _delta in subscription:
                async with self._changed:
                    self.generation += 1
                    self._changed.notify_all()
        finally:
            subscription.close()

    async def _resources(self, request: Request) -> Any:
        return resources_json(
            self.config, request.query.get("kind", ""), request.query.get("namespace")
        )

    async def _manifests(self, request: Request) -> list[dict[str, Any]]:
        return manifests_json(self.config)

    async def _schedule(self, request: Request) -> dict[str, Any]:
        try:
            after = int(request.query.get("after", "-1"))
        except ValueError:
            raise Refused("after must be an integer") from None
        if after == self.generation:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self.generation != after), self.wait
                    )
        plane = self.config.plane
        runs = scheduled_runs(plane, self.config.config_dir)
        return {
            "boot": self.boot,
            "generation": self.generation,
            "nodes": {name: str(ip) for name, ip in sorted(plane.snapshot.nodes.items())},
            "pods": [
                {
                    "run": pod_run_to_json(s.run),
                    "workload": s.workload,
                    "workloadType": s.workload_type,
                }
                for _, s in sorted(runs.items())
            ],
        }

    async def _health(self, request: Request) -> dict[str, Any]:
        body = json_body(request)
        try:
            uid, ready = str(body["uid"]), bool(body["ready"])
        except KeyError as exc:
            raise Refused(f"missing field {exc}") from None
        plane = self.config.plane
        if not self._health_tracked:  # a runtime reports: from now on readiness counts
            self._health_tracked = True
            plane.track_health()
        plane.set_health(uid, ready)
        return {"result": "ok"}
