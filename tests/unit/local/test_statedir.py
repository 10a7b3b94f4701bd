"""The state folder is the mesh's alone, and so are its sockets when the path is too long."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ambient.cli.client import MeshClient
from ambient.local.api import ControlApi
from ambient.local.statedir import MeshNotRunning, StateDir, StateDirError


def long_root(base: Path) -> Path:
    root = base / ("d" * 60) / ("e" * 60)
    assert len(str(root / "control.sock")) > 100
    return root


def test_short_paths_stay_in_the_state_folder(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    assert state.socket_path == tmp_path / "s" / "control.sock"
    assert state.extra_socket("nodeagent-node-1") == tmp_path / "s" / "nodeagent-node-1.sock"
    assert state.private_socket_dirs == ()


def test_long_paths_use_a_private_folder_not_a_guessable_tmp_name(tmp_path: Path) -> None:
    root = long_root(tmp_path)
    # What a squatter would pre-create from the old predictable name.
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    guessable = Path(f"/tmp/ambient-{digest}.sock")
    state = StateDir(root)
    try:
        control = state.socket_path
        node = state.extra_socket("nodeagent-" + "n" * 120)  # longer than sun_path on its own
        assert control != guessable
        folder = control.parent
        assert folder != Path("/tmp") and folder.name.startswith("ambient-")
        assert node.parent == folder and len(str(node)) <= 100
        info = os.lstat(folder)
        assert stat.S_ISDIR(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.geteuid()
        assert state.private_socket_dirs == (folder,)
        # Another StateDir (another run) gets another folder: nothing to guess in advance.
        other = StateDir(root)
        assert other.socket_path.parent != folder
        other.remove_private_socket_dir()
    finally:
        state.remove_private_socket_dir()
    assert not folder.exists()


def test_private_folder_prefers_an_own_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="run-"))  # short: tmp_path is too long a base
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    state = StateDir(long_root(tmp_path))
    try:
        assert state.socket_path.parent.parent == runtime
    finally:
        state.remove_private_socket_dir()
    runtime.chmod(0o777)  # others may enter: not used
    state = StateDir(long_root(tmp_path))
    try:
        assert state.socket_path.parent.parent != runtime
    finally:
        state.remove_private_socket_dir()


def test_create_makes_the_folder_private(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    StateDir(root).create()
    for folder in (root, root / "logs"):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder owned by another user")
def test_create_refuses_a_folder_of_another_user(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    os.chown(root, 65534, 65534)
    with pytest.raises(StateDirError, match=r"belongs to uid 65534"):
        StateDir(root).create()


class _Backend:
    def __init__(self, state: StateDir) -> None:
        self.state = state

    async def status(self) -> dict[str, Any]:
        return {"ready": True, "components": []}


async def test_control_api_on_a_long_state_path(tmp_path: Path) -> None:
    state = StateDir(long_root(tmp_path))
    state.create()
    api = ControlApi(_Backend(state))  # type: ignore[arg-type]
    path = await api.start()
    try:
        state.write_mesh_file({"pid": os.getpid(), "socket": path})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        answer = await asyncio.to_thread(MeshClient(state, timeout=5).get, "/status")
        assert answer == {"ready": True, "components": []}
    finally:
        await api.close()
        state.remove_private_socket_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a socket owned by another user")
def test_client_refuses_a_socket_another_user_made(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.create()
    planted = tmp_path / "planted.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(planted))
    os.chown(planted, 65534, 65534)
    state.write_mesh_file({"pid": os.getpid(), "socket": str(planted)})
    try:
        with pytest.raises(MeshNotRunning, match="not the mesh's control socket"):
            MeshClient(state)
    finally:
        listener.close()
