"""Talking to a running mesh: the control API over its Unix socket (standard library only)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from ambient.local.statedir import MeshNotRunning, StateDir


class ApiError(Exception):
    """The mesh answered with an error; the message is the mesh's own."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _check_owner(socket_path: Path, root: Path) -> None:
    """The socket must belong to whoever owns the state folder: a socket another user made
    (e.g. at a path they guessed) would otherwise answer for the mesh."""
    try:
        info = os.lstat(socket_path)
        owner = os.stat(root).st_uid
    except OSError:
        return  # connecting reports it
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != owner:
        raise MeshNotRunning(
            f"{socket_path} is not the mesh's control socket (it is not a socket owned by "
            f"uid {owner}, the owner of {root}); refusing to talk to it"
        )


class MeshClient:
    """Calls the control API of the mesh recorded in a state folder."""

    def __init__(self, state: StateDir, timeout: float = 30.0) -> None:
        self.state = state
        self.timeout = timeout
        self.info = state.read_mesh_file()
        self.socket = Path(self.info.get("socket", str(state.root / "control.sock")))
        _check_owner(self.socket, state.root)

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        conn = _UnixConnection(str(self.socket), self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"content-type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise MeshNotRunning(
                f"cannot reach the mesh's control socket {self.socket}: {exc.strerror}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(f"talking to the mesh failed: {exc}") from None
        finally:
            conn.close()
        try:
            value = json.loads(data)
        except json.JSONDecodeError:
            raise ApiError(
                f"the mesh answered {response.status}: {data.decode(errors='replace')}"
            ) from None
        if response.status >= 400:
            raise ApiError(
                value.get("error", str(value)) if isinstance(value, dict) else str(value)
            )
        return value
