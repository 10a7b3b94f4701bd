"""The node agent's end of the CNI plugin (``ambient.cni.plugin``): the plugin-event socket.

istio-cni's cni-watcher: the plugin, run by the container runtime for a new pod
sandbox, posts the pod to the node agent and waits; the agent answers once the pod is
served (for an enrolled pod: its redirection installed). HTTP/1.1 over the Unix socket
``<run dir>/pluginevent.sock``:

- ``POST /cmdadd`` with ``{"containerId", "netns", "ifname", "podName", "podNamespace",
  "podUid", "ips"}`` → ``200 {"enrolled": bool, "pod": "ns/name", "netns": path}``;
  ``400`` for a malformed event (the field and the problem named), ``403``/``409`` for a
  pod this node must not serve (another node's, another uid), ``503`` while the API
  server cannot be asked (the plugin reports "try again later"), ``500`` when the
  namespace could not be prepared. Errors are ``{"error": "..."}``.

Hardening: the run folder is made ``0700`` (and refused if it is a symbolic link or
another user's), the socket is created ``0600`` (under a umask, so there is no moment
it is open to others), bodies are capped at 64 KiB and connections at 16, every field is
checked for type, length and syntax before anything is done with it, and a handler's
failure is an answer naming it, never a dropped connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ambient.cni.plugin import ADD_PATH, EVENT_SOCKET
from ambient.httpd import AdminServer, Request, Response

__all__ = ["EventError", "PluginEventServer", "PodEvent", "Refused", "parse_event"]

log = logging.getLogger("ambient.nodeagent")

MAX_EVENT = 64 * 1024
MAX_CONNECTIONS = 16
MAX_IPS = 16
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9\-.]{0,251}[a-z0-9])?")
_UID = re.compile(r"[A-Za-z0-9\-]{1,128}")
_IFNAME = re.compile(r"[A-Za-z0-9_.\-]{1,15}")  # IFNAMSIZ - 1


class EventError(ValueError):
    """A malformed event; the message names the field."""


class Refused(Exception):
    """The agent will not serve this pod; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PodEvent:
    """One ``ADD`` as the plugin reports it."""

    container_id: str
    netns: str
    ifname: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    ips: tuple[str, ...]

    @property
    def pod(self) -> str:
        return f"{self.pod_namespace}/{self.pod_name}"


def _string(body: dict[str, Any], key: str, pattern: re.Pattern[str] | None, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise EventError(f"{key}: a string is required")
    if pattern is not None and not pattern.fullmatch(value):
        raise EventError(f"{key}: {value[:80]!r} is not {what}")
    return value


def parse_event(raw: bytes) -> PodEvent:
    """The event in ``raw`` (JSON), every field checked; :class:`EventError` if not."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise EventError(f"body: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise EventError("body: a JSON object is required")
    netns = _string(body, "netns", None, "")
    if not netns.startswith("/") or len(netns) > 4096 or "\0" in netns:
        raise EventError(f"netns: {netns[:80]!r} is not an absolute path")
    if ".." in netns.split("/"):
        raise EventError(f"netns: {netns[:80]!r} has a '..' component")
    uid = body.get("podUid", "")
    if uid != "" and (not isinstance(uid, str) or not _UID.fullmatch(uid)):
        raise EventError(f"podUid: {str(uid)[:80]!r} is not a uid")
    ips = body.get("ips", [])
    if not isinstance(ips, list) or len(ips) > MAX_IPS:
        raise EventError(f"ips: a list of at most {MAX_IPS} addresses is required")
    for i, ip in enumerate(ips):
        try:
            ipaddress.ip_address(ip if isinstance(ip, str) else "-")
        except ValueError:
            raise EventError(f"ips[{i}]: {str(ip)[:80]!r} is not an IP address") from None
    return PodEvent(
        container_id=_string(body, "containerId", _CONTAINER_ID, "a container id"),
        netns=netns,
        ifname=_string(body, "ifname", _IFNAME, "an interface name"),
        pod_name=_string(body, "podName", _DNS_SUBDOMAIN, "a pod name (DNS-1123 subdomain)"),
        pod_namespace=_string(body, "podNamespace", _DNS_LABEL, "a namespace (DNS-1123 label)"),
        pod_uid=uid,
        ips=tuple(ips),
    )


Handler = Callable[[PodEvent], Awaitable[dict[str, Any]]]


def secure_run_dir(run_dir: Path) -> None:
    """Make ``run_dir`` (mode ``0700``, owned by this user); refuse a symbolic link or a
    folder of another user (someone else could then replace the socket)."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(run_dir)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{run_dir} is not a folder (a symbolic link?): refusing it")
    if info.st_uid != os.geteuid():
        raise OSError(f"{run_dir} belongs to uid {info.st_uid}, not to this agent: refusing it")
    os.chmod(run_dir, 0o700)


class PluginEventServer:
    """Serves the plugin's events on ``<run_dir>/pluginevent.sock`` (see the module docstring)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.path: Path | None = None
        self._server = AdminServer(
            {f"POST {ADD_PATH}": self._add},
            max_body=MAX_EVENT,
            max_connections=MAX_CONNECTIONS,
        )

    async def start(self, run_dir: Path) -> Path:
        """Listen; returns the socket's path."""
        secure_run_dir(run_dir)
        path = run_dir / EVENT_SOCKET
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        previous = os.umask(0o177)
        try:
            await self._server.start_unix(str(path))
        finally:
            os.umask(previous)
        os.chmod(path, 0o600)
        self.path = path
        log.info("CNI plugin events on %s", path)
        return path

    async def close(self) -> None:
        await self._server.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _add(self, request: Request) -> Response:
        try:
            event = parse_event(request.body)
        except EventError as err:
            log.warning("CNI event refused: %s", err)
            return Response.json({"error": f"bad event: {err}"}, 400)
        try:
            answer = await self.handler(event)
        except Refused as err:
            log.warning("CNI ADD %s (%s): %s", event.pod, event.netns, err)
            return Response.json({"error": str(err)}, err.status)
        return Response.json(answer)
