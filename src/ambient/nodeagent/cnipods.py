"""A node's pods as its CNI plugin reports them: decided, adopted, remembered, forgotten.

``CniPods.add`` is the handler of the plugin-event socket (``pluginevents``). For each
``ADD`` it asks the :class:`~ambient.nodeagent.enrollment.Enrollment` about the pod,
checks the namespace the runtime made (under the runtime's namespace folder, a network
namespace, not the host's), and has the agent adopt it (``NodeAgent.adopt_pod``):
policy routing and NAT chains always, the redirection too when the pod is enrolled —
done before the answer, so the runtime starts the pod's containers only once their
traffic is captured. Every pod with an IPv4 address is adopted, enrolled or not: its
node's ztunnel then knows its namespace, and labelling its namespace later captures it
without a restart (the ztunnel asks for the redirection, as in ``ambient up --netns``).

Decisions:

- **Which paths.** containerd and CRI-O pin a sandbox's namespace as
  ``/var/run/netns/<name>``; the agent accepts a path in that folder (or ``/run/netns``,
  the same folder on systemd hosts) and opens it in its own view of the folder
  (``netns_dir``: the DaemonSet mounts the host's at the same path). Other paths
  (``/proc/<pid>/ns/net`` from cri-dockerd) are refused for an enrolled pod — fail
  closed — and ignored with a warning for the others.
- **Forgetting.** ``DEL`` is not sent (the plugin answers it alone, as istio-cni's):
  a runtime removes a sandbox's namespace file after ``DEL``, and the agent checks
  its pods' files every :data:`LIVENESS_INTERVAL` seconds, forgetting a pod whose file is
  gone or is another namespace now. A new sandbox reported with the same address
  replaces the old one at once.
- **Restarts.** The adopted pods are written to ``<run dir>/cni-pods.json`` (0600) after
  every change and read back at start: those whose namespace still exists are adopted
  again (their rules re-applied, the redirection as found in the namespace), so a
  restarted agent (an upgrade of its DaemonSet) keeps serving the running pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ambient import netns as ns
from ambient.nodeagent.enrollment import Enrollment
from ambient.nodeagent.pluginevents import PodEvent, Refused
from ambient.nodeagent.redirection import REDIRECT_TABLE
from ambient.ztunnel.listeners import OUTBOUND_CAPTURE_PORT

__all__ = ["LIVENESS_INTERVAL", "RUNTIME_NETNS_DIRS", "STATE_FILE", "CniPods"]

log = logging.getLogger("ambient.nodeagent")

LIVENESS_INTERVAL = 2.0
STATE_FILE = "cni-pods.json"
RUNTIME_NETNS_DIRS = (PurePosixPath("/var/run/netns"), PurePosixPath("/run/netns"))


def redirection_installed(netns: str) -> bool:
    """Whether the pod's namespace has the outbound redirect (what the rules say now)."""
    try:
        listed = ns.run("nft", "list", "table", "inet", REDIRECT_TABLE, netns=netns)
    except ns.NetnsError:
        return False
    return f"redirect to :{OUTBOUND_CAPTURE_PORT}" in listed


class CniPods:
    """One node's plugin-reported pods (see the module docstring)."""

    def __init__(
        self,
        agent: Any,  # NodeAgent (an import of agent here would be a cycle for its users)
        node: str,
        enrollment: Enrollment,
        *,
        netns_dir: Path = Path("/var/run/netns"),
        state_file: Path | None = None,
    ) -> None:
        self.agent = agent
        self.node = node
        self.enrollment = enrollment
        self.netns_dir = netns_dir
        self.state_file = state_file
        self._adopted: dict[str, dict[str, Any]] = {}  # ip -> what the state file keeps
        self._lock = asyncio.Lock()
        self._liveness: asyncio.Task[None] | None = None

    # -- ADD ------------------------------------------------------------------------------

    def local_path(self, reported: str) -> Path | None:
        """Where this agent opens the runtime's namespace ``reported``; None if outside the
        runtime's namespace folder."""
        path = PurePosixPath(reported)
        if path.parent in RUNTIME_NETNS_DIRS or path.parent == PurePosixPath(self.netns_dir):
            return self.netns_dir / path.name
        return None

    async def add(self, event: PodEvent) -> dict[str, Any]:
        """The plugin-event handler: serve the pod, then answer (``Refused`` if not)."""
        verdict = await self.enrollment.decide(event)
        answer: dict[str, Any] = {"enrolled": verdict.enrolled, "pod": event.pod}
        path = self.local_path(event.netns)
        ip = next((a for a in event.ips if ipaddress.ip_address(a).version == 4), None)
        problem = None
        if path is None:
            problem = (
                f"netns {event.netns} is not in the runtime's namespace folder "
                f"({RUNTIME_NETNS_DIRS[0]}): this runtime's pods cannot be captured"
            )
        elif ip is None:
            problem = "prevResult has no IPv4 address for the pod"
        if problem is not None:
            if verdict.enrolled:
                raise Refused(400, f"pod {event.pod} is enrolled, but {problem}")
            log.warning("pod %s is not served (%s)", event.pod, problem)
            return {**answer, "served": False}
        assert path is not None and ip is not None
        try:
            inode = await asyncio.to_thread(ns.check_network_namespace, path)
        except ns.NetnsError as err:
            raise Refused(400, f"netns: {err}") from None
        async with self._lock:
            try:
                await self.agent.adopt_pod(
                    self.node, event.pod_namespace, event.pod_name, verdict.uid, ip,
                    str(path), inode, verdict.enrolled,
                )  # fmt: skip
            except ns.NetnsError as err:
                raise Refused(500, f"preparing {path} failed: {err}") from None
            self._adopted[ip] = {
                "namespace": event.pod_namespace,
                "name": event.pod_name,
                "uid": verdict.uid,
                "netns": str(path),
                "inode": inode,
            }
            self._save()
        self._watch()
        return {**answer, "served": True, "netns": str(path), "ip": ip}

    # -- forgetting -------------------------------------------------------------------------

    def _watch(self) -> None:
        if self._liveness is None or self._liveness.done():
            self._liveness = asyncio.ensure_future(self._follow_namespaces())

    async def _follow_namespaces(self) -> None:
        while self._adopted:
            await asyncio.sleep(LIVENESS_INTERVAL)
            await self.check_namespaces()

    async def check_namespaces(self) -> list[str]:
        """Forget the pods whose namespace file is gone or re-made; returns their addresses."""
        gone = []
        async with self._lock:
            for ip, pod in list(self._adopted.items()):
                try:
                    alive = os.stat(pod["netns"]).st_ino == pod["inode"]
                except OSError:
                    alive = False
                if not alive:
                    gone.append(ip)
                    del self._adopted[ip]
                    self.agent.forget_pod(ip)
                    log.info("%s/%s (%s): namespace gone, forgotten", pod["namespace"],
                             pod["name"], ip)  # fmt: skip
            if gone:
                self._save()
        return gone

    # -- restarts ---------------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"node": self.node, "pods": self._adopted}, out, indent=1, sort_keys=True)
        os.replace(tmp, self.state_file)

    async def restore(self) -> int:
        """Adopt again the pods of the state file whose namespace still exists; returns how many."""
        if self.state_file is None or not self.state_file.is_file():
            return 0
        try:
            saved = json.loads(self.state_file.read_text())
            pods = dict(saved["pods"]) if saved.get("node") == self.node else {}
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("%s unreadable (%s): starting without it", self.state_file, err)
            pods = {}
        async with self._lock:
            for ip, pod in pods.items():
                with contextlib.suppress(OSError, KeyError, TypeError, ns.NetnsError):
                    path = Path(pod["netns"])
                    if ns.check_network_namespace(path) != pod["inode"]:
                        continue
                    redirect = await asyncio.to_thread(redirection_installed, str(path))
                    await self.agent.adopt_pod(
                        self.node, pod["namespace"], pod["name"], pod["uid"], ip, str(path),
                        pod["inode"], redirect,
                    )  # fmt: skip
                    self._adopted[ip] = pod
            self._save()
        if self._adopted:
            self._watch()
        log.info("%d pod(s) of %s adopted again", len(self._adopted), self.state_file)
        return len(self._adopted)

    async def close(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._liveness
