"""The node agent ↔ ztunnel channel of ``ambient up --netns`` with ztunnels as processes.

Istio's istio-cni node agent tells ztunnel about each local pod over a Unix socket
(ZDS) and hands it the pod's network namespace as a file descriptor. Here the node
agent (in the ``ambient up`` process) serves one Unix socket per node,
``STATE/nodes/<node>/nodeagent.sock``, and that node's ``ambient ztunnel`` process
is its only client. HTTP/1.1 with JSON bodies (``ambient.httpd``):

- ``GET /pods?after=G``: long poll; ``{"generation": N, "pods": {ip: {"netns": name,
  "inode": n}}}`` for the pods on this node, answered at once when ``N != G``;
- ``POST /redirection`` ``{"ip", "enabled"}``: install or remove the pod's redirection
  (ztunnel asks once its in-pod listeners are open, as in the one-process mode);
- ``POST /pods`` ``{"namespace", "name", "ip"}`` → ``{"netns": name}``: a namespace for a
  waypoint pod that this node's ztunnel hosts — on a real cluster (``ambient node-agent``)
  the sandbox the container runtime made for it, whatever the cluster's pod range;
  ``POST /pods/delete`` ``{"ip"}`` removes it (never a runtime's).

Decision — namespace *paths*, not file descriptors: the ztunnel opens
``/run/netns/<name>`` itself. It runs as root on the same host (``setns`` needs
``CAP_SYS_ADMIN`` anyway), so an fd passed with ``SCM_RIGHTS`` would grant it nothing
it could not already open, and a plain HTTP/JSON channel is simpler to follow and to
debug. What fds buy in Istio is (a) no access to the host's ``/run/netns`` and
(b) pinning the exact namespace, immune to a name being re-used. (a) does not apply
to a root process on the host; (b) is kept: the agent sends each namespace's inode and
the ztunnel's namespace thread refuses a namespace whose inode differs
(:class:`~ambient.netns.NetnsThread`), so a pod deleted and re-made under
the same name is never served through the old one's answer. The socket is made
``0600`` in the root-only state folder, and a ztunnel can only act on pods of the
node whose socket it was given: the agent refuses any other address (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambient.httpclient import unix_request
from ambient.httpd import AdminServer, Request, Response
from ambient.netns import NetnsError, NetnsThread
from ambient.state.workload import Workload

log = logging.getLogger("ambient.nodeagent")

SOCKET_NAME = "nodeagent.sock"
LONG_POLL = 20.0


class PodSocketServer:
    """The node agent's side for one node: serves its ztunnel on a Unix socket."""

    def __init__(self, agent: Any, node: str) -> None:  # agent: NodeAgent (import cycle)
        self.agent = agent
        self.node = node
        self.generation = 0
        self._changed = asyncio.Event()
        self._server = AdminServer(
            {
                "/pods": self._pods,
                "POST /redirection": self._redirection,
                "POST /pods": self._add_pod,
                "POST /pods/delete": self._remove_pod,
            }
        )

    async def start(self, path: Path) -> None:
        """Listen on ``path``, mode ``0600`` (made ``0755`` by the usual umask: connecting
        needs write permission, so no other user could connect before the chmod either)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        await self._server.start_unix(str(path))
        os.chmod(path, 0o600)

    async def close(self) -> None:
        await self._server.close()

    def pods_changed(self) -> None:
        """The agent made or removed a pod namespace on this node: wake the long polls."""
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _listing(self) -> dict[str, Any]:
        return {"generation": self.generation, "pods": self.agent.pods_on(self.node)}

    async def _pods(self, request: Request) -> Response:
        try:
            after = int(request.query.get("after", "-1"))
        except ValueError:
            return Response.json({"error": "after: not an integer"}, 400)
        if after == self.generation:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), LONG_POLL)
        return Response.json(self._listing())

    def _own_pod(self, body: Any) -> str | Response:
        ip = body.get("ip") if isinstance(body, dict) else None
        if not isinstance(ip, str):
            return Response.json({"error": "body: field ip (string) is required"}, 400)
        if ip not in self.agent.pods_on(self.node):
            return Response.json({"error": f"{ip} is not a pod on node {self.node}"}, 403)
        return ip

    async def _redirection(self, request: Request) -> Response:
        body = request.json()
        ip = self._own_pod(body)
        if isinstance(ip, Response):
            return ip
        try:
            await self.agent.set_redirection_ip(ip, bool(body.get("enabled")))
        except NetnsError as exc:
            return Response.json({"error": str(exc)}, 500)
        await self.agent.served(ip, bool(body.get("enabled")))
        return Response.json({"ok": True})

    async def _add_pod(self, request: Request) -> Response:
        body = request.json()
        fields = {
            k: body.get(k) if isinstance(body, dict) else None for k in ("namespace", "name", "ip")
        }
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            return Response.json({"error": f"body: missing field(s) {', '.join(missing)}"}, 400)
        pool = self.agent.pod_cidr
        try:
            ip = ipaddress.ip_address(str(fields["ip"]))
        except ValueError:
            return Response.json({"error": f"body: ip: {fields['ip']!r} is not an address"}, 400)
        known = self.agent.pods_on(self.node).get(str(ip))
        if known is not None:  # a runtime's sandbox (CNI ADD), or one made before
            return Response.json({"netns": known["netns"]})
        if ip not in pool:
            return Response.json({"error": f"body: ip: {ip} is not a pod address ({pool})"}, 400)
        try:
            netns = await self.agent.add_pod(
                fields["namespace"], fields["name"], self.node, fields["ip"]
            )
        except NetnsError as exc:
            return Response.json({"error": str(exc)}, 500)
        return Response.json({"netns": netns})

    async def _remove_pod(self, request: Request) -> Response:
        ip = self._own_pod(request.json())
        if isinstance(ip, Response):
            return ip
        await self.agent.remove_pod(ip)
        return Response.json({"ok": True})


class PodSocketClient:
    """The ztunnel's side: ``PodNetworks`` (and waypoint namespaces) from the node agent."""

    def __init__(self, path: Path, node: str) -> None:
        self.path = str(path)
        self.node = node
        self.pods: dict[str, dict[str, Any]] = {}
        self.generation = -1
        self.on_change: Callable[[], None] | None = None
        self._follow: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        """First listing (retried until ``timeout``: the agent may be starting), then follow."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._poll(-1)
                break
            except (OSError, TimeoutError) as exc:
                if loop.time() > deadline:
                    raise OSError(f"node agent socket {self.path}: {exc}") from None
                await asyncio.sleep(0.1)
        self._follow = asyncio.ensure_future(self._follow_agent())

    async def close(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow

    async def _poll(self, after: int) -> None:
        status, answer = await unix_request(
            self.path, "GET", f"/pods?after={after}", timeout=LONG_POLL + 10
        )
        if status != 200 or not isinstance(answer, dict):
            raise OSError(f"the node agent answered {status}: {answer}")
        changed = answer["pods"] != self.pods
        self.pods = answer["pods"]
        self.generation = answer["generation"]
        if changed and self.on_change is not None:
            self.on_change()

    async def _follow_agent(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._poll(self.generation)
                delay = 0.1
            except (OSError, TimeoutError) as exc:
                log.warning("ztunnel %s: node agent unreachable: %s", self.node, exc)
                self.generation = -1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _call(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            status, answer = await unix_request(self.path, "POST", target, body)
        except TimeoutError as exc:
            raise NetnsError(f"node agent {self.path}: {target} timed out") from exc
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise NetnsError(f"node agent {self.path}: {target}: {error} ({status})")
        return answer

    # -- PodNetworks ---------------------------------------------------------------------------

    def netns_thread(self, ip: str) -> NetnsThread | None:
        pod = self.pods.get(ip)
        if pod is None:
            return None
        try:
            return NetnsThread(pod["netns"], inode=pod.get("inode"))
        except NetnsError as exc:
            log.warning("ztunnel %s: pod %s: %s", self.node, ip, exc)
            return None

    def netns_of(self, workload: Workload) -> NetnsThread | None:
        return self.netns_thread(str(workload.addresses[0])) if workload.addresses else None

    async def set_redirection(self, workload: Workload, enabled: bool) -> None:
        if workload.addresses:
            await self._call("/redirection", {"ip": str(workload.addresses[0]), "enabled": enabled})

    # -- waypoint pods (``ambient.nodeagent.waypoints.PodNamespaces``) ----------------------------

    async def add_pod(self, namespace: str, name: str, node: str, ip: str) -> str:
        if node != self.node:
            raise NetnsError(f"pod {namespace}/{name} is on node {node}, not {self.node}")
        answer = await self._call("/pods", {"namespace": namespace, "name": name, "ip": ip})
        await self._poll(-1)  # its namespace is listed before anyone asks for it
        return str(answer["netns"])

    async def remove_pod(self, ip: str) -> None:
        with contextlib.suppress(OSError, NetnsError):
            await self._call("/pods/delete", {"ip": ip})
