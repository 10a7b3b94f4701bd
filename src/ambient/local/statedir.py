"""The state folder of a running mesh (``--state-dir``, default ``./.ambient``).

It holds the CA (unless plug-in CA files are used), the address allocations,
container logs, and ``mesh.json``, which tells the other commands where the
running mesh's control socket is.

The folder is the mesh's alone: :meth:`StateDir.create` makes it (and ``logs``)
mode 0700 and refuses one owned by another user. Its Unix sockets live in it
unless a socket path would not fit ``sun_path`` (108 bytes); then they go to a
private folder made for this run with ``mkdtemp`` (random name, created 0700 by
us or not at all, its owner and mode checked after), never to a predictable
``/tmp`` name another user could create first. The other commands find the
control socket through ``mesh.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".ambient"
ENV_VAR = "AMBIENT_STATE_DIR"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
_SOCKET_DIR_PREFIX = "ambient-"


class StateDirError(Exception):
    """The state folder (or the private socket folder) is not safely ours."""


class MeshNotRunning(Exception):
    """No mesh is running for this state folder."""


@dataclass(frozen=True)
class StateDir:
    root: Path
    _private: list[Path] = field(default_factory=list, init=False, compare=False, repr=False)
    """The private socket folder once made (a one-slot cell: the dataclass is frozen)."""

    @classmethod
    def resolve(cls, option: str | Path | None) -> StateDir:
        """From ``--state-dir``, else ``$AMBIENT_STATE_DIR``, else ``./.ambient``."""
        value = option or os.environ.get(ENV_VAR) or DEFAULT_STATE_DIR
        return cls(Path(value).expanduser().absolute())

    def create(self) -> None:
        """Make the folder (and ``logs``) 0700; StateDirError if another user owns it."""
        for folder in (self.root, self.root / "logs"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode):
                raise StateDirError(f"state folder {folder} is not a directory (a symlink?)")
            if info.st_uid != os.geteuid():
                raise StateDirError(
                    f"state folder {folder} belongs to uid {info.st_uid}, not to this user "
                    f"(uid {os.geteuid()}): use a folder of your own"
                )
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(folder, 0o700)

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def mesh_file(self) -> Path:
        return self.root / "mesh.json"

    @property
    def socket_path(self) -> Path:
        """The control API's socket (the CLI reads the path from ``mesh.json``)."""
        return self.extra_socket("control")

    def extra_socket(self, name: str) -> Path:
        """A socket of a process ``ambient up`` runs (e.g. the control plane's), by name.

        In the state folder if the path fits, else in :meth:`private_socket_dir`
        (under a hash of ``name`` if even that is too long)."""
        path = self.root / f"{name}.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        folder = self.private_socket_dir()
        path = folder / f"{name}.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        return folder / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.sock"

    def secret_paths(self) -> tuple[Path, ...]:
        """The folders pods must not see: this one and, if socket paths are too long for
        it, the private socket folder (made now, so that it can be hidden)."""
        self.extra_socket("control")
        return (self.root, *self._private)

    @property
    def private_socket_dirs(self) -> tuple[Path, ...]:
        """The private socket folder if this process made one (pods must not see it)."""
        return tuple(self._private)

    def private_socket_dir(self) -> Path:
        """This run's private socket folder (``$XDG_RUNTIME_DIR`` or the temp folder), made once.

        ``mkdtemp`` creates it 0700 under a random name and fails rather than reuse
        an existing entry; its owner and mode are checked again before use."""
        if self._private:
            return self._private[0]
        folder = Path(tempfile.mkdtemp(prefix=_SOCKET_DIR_PREFIX, dir=_runtime_base()))
        info = os.lstat(folder)
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077
        ):  # pragma: no cover - mkdtemp made it; a check that it did
            raise StateDirError(f"private socket folder {folder} is not ours alone")
        self._private.append(folder)
        return folder

    def remove_private_socket_dir(self) -> None:
        """Remove the private socket folder (at shutdown), if one was made."""
        while self._private:
            shutil.rmtree(self._private.pop(), ignore_errors=True)

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


def _runtime_base() -> str | None:
    """``$XDG_RUNTIME_DIR`` if it is a folder of ours that nobody else can enter, else None
    (``mkdtemp``'s default: ``$TMPDIR`` or ``/tmp``)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base:
        return None
    try:
        info = os.stat(base)
    except OSError:
        return None
    mine = info.st_uid == os.geteuid() and not stat.S_IMODE(info.st_mode) & 0o077
    if not (stat.S_ISDIR(info.st_mode) and mine and len(base) < _MAX_SOCKET_PATH - 40):
        return None
    return base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
