"""The state folder of a running mesh (``--state-dir``, default ``./.ambient``).

It holds the CA (unless plug-in CA files are used), the address allocations,
container logs, and ``mesh.json``, which tells the other commands where the
running mesh's control socket is.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".ambient"
ENV_VAR = "AMBIENT_STATE_DIR"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class MeshNotRunning(Exception):
    """No mesh is running for this state folder."""


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def resolve(cls, option: str | Path | None) -> StateDir:
        """From ``--state-dir``, else ``$AMBIENT_STATE_DIR``, else ``./.ambient``."""
        value = option or os.environ.get(ENV_VAR) or DEFAULT_STATE_DIR
        return cls(Path(value).expanduser().absolute())

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "logs").mkdir(exist_ok=True)

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def mesh_file(self) -> Path:
        return self.root / "mesh.json"

    @property
    def socket_path(self) -> Path:
        path = self.root / "control.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path(f"/tmp/ambient-{digest}.sock")

    def extra_socket(self, name: str) -> Path:
        """A socket of a process ``ambient up`` runs (e.g. the control plane's), by name."""
        path = self.root / f"{name}.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(f"{self.root}/{name}".encode()).hexdigest()[:16]
        return Path(f"/tmp/ambient-{digest}.sock")

    def write_mesh_file(self, info: dict[str, Any]) -> None:
        tmp = self.mesh_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.mesh_file)

    def read_mesh_file(self) -> dict[str, Any]:
        """What ``ambient up`` recorded; raises :class:`MeshNotRunning` with advice."""
        try:
            info: dict[str, Any] = json.loads(self.mesh_file.read_text())
        except FileNotFoundError:
            raise MeshNotRunning(
                f"no mesh is running for state folder {self.root} "
                "(start one with `ambient up DIR`, or pass --state-dir / set AMBIENT_STATE_DIR)"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise MeshNotRunning(f"cannot read {self.mesh_file}: {exc}") from None
        pid = info.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            raise MeshNotRunning(
                f"the mesh recorded in {self.mesh_file} (pid {pid}) is not running; "
                "start it with `ambient up DIR`"
            )
        return info

    def clear_mesh_file(self) -> None:
        self.mesh_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
