"""Pods run as their user, with a minimal environment, and never see the mesh's folders.

Real processes through the real launcher. The hidden folder is deliberately
world-readable (and its "key" 0644) so that only the hiding keeps the pod out;
root's 0600/0700 modes are the second line, tested end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ambient.config.resources import Container, SecurityContext
from ambient.runtime import ContainerState, EventKind, Supervisor
from ambient.runtime.security import Isolation
from tests.component.runtime.harness import TIMEOUT, Events, pod

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs pods as other users: needs root")


def _others_can_run(path: Path) -> bool:
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & 0o001:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in real.parents)


def pod_python() -> str:
    """A Python that any user can run (pyenv's may live under a 0700 /root)."""
    for candidate in (Path(sys.executable), Path("/usr/bin/python3")):
        if _others_can_run(candidate):
            return str(candidate)
    pytest.skip("no Python interpreter that other users can run")


PROBE = textwrap.dedent("""\
    import json, os, socket, sys
    secret, sock = sys.argv[1], sys.argv[2]
    out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
           "groups": sorted(os.getgroups()), "env": dict(os.environ), "cwd": os.getcwd()}
    try:
        out["secret"] = open(secret).read()
    except OSError as exc:
        out["secret"] = type(exc).__name__
    try:
        out["listing"] = sorted(os.listdir(os.path.dirname(secret)))
    except OSError as exc:
        out["listing"] = type(exc).__name__
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sock)
        out["socket"] = "connected"
    except OSError as exc:
        out["socket"] = type(exc).__name__
    print("PROBE " + json.dumps(out), flush=True)
""")


@pytest.fixture
def mesh_dir() -> Iterator[Path]:
    """A folder anyone could read but for the hiding: a 0644 key and a 0666 socket in it."""
    folder = Path(tempfile.mkdtemp(prefix="ambient-iso-"))
    folder.chmod(0o755)
    (folder / "root-key.pem").write_text("PRIVATE")
    (folder / "root-key.pem").chmod(0o644)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "control.sock"))
    (folder / "control.sock").chmod(0o666)
    listener.listen()
    try:
        yield folder
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def probe_container(mesh_dir: Path, **security: Any) -> Container:
    return Container(
        "probe",
        command=(
            pod_python(),
            "-c",
            PROBE,
            str(mesh_dir / "root-key.pem"),
            str(mesh_dir / "control.sock"),
        ),
        security_context=SecurityContext(**security) if security else None,
    )


async def run_probe(
    tmp_path: Path, mesh_dir: Path, container: Container, **pod_fields: Any
) -> tuple[dict[str, Any], Supervisor]:
    events = Events()
    supervisor = Supervisor(
        tmp_path / "state", on_event=events, isolation=Isolation.of(mesh_dir, tmp_path / "state")
    )
    try:
        await supervisor.start_pod(pod(tmp_path, container, **pod_fields))
        exited = await events.wait_for(EventKind.EXITED)
        log = supervisor.log_path("shop", "web", "probe").read_text()
        assert exited[0].exit_code == 0, log
    finally:
        await supervisor.close()
    line = next(line for line in log.splitlines() if line.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE ")), supervisor


def test_the_fixture_would_expose_the_key_without_hiding(mesh_dir: Path) -> None:
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat",
         str(mesh_dir / "root-key.pem")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout == "PRIVATE"


async def test_a_pod_runs_as_nobody_with_a_minimal_env_and_sees_no_mesh_folder(
    tmp_path: Path, mesh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    seen, _ = await run_probe(tmp_path, mesh_dir, probe_container(mesh_dir))
    assert (seen["uid"], seen["euid"], seen["gid"], seen["groups"]) == (65534, 65534, 65534, [])
    assert seen["secret"] == "FileNotFoundError"
    assert seen["listing"] == []
    assert seen["socket"] == "FileNotFoundError"
    assert seen["cwd"] == str(tmp_path)  # entered before the uid changed
    env = seen["env"]
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SSH_AUTH_SOCK" not in env
    assert set(env) - {"LC_CTYPE"} == {  # (Python's C-locale coercion may add LC_CTYPE)
        "PATH", "HOME", "HOSTNAME", "POD_IP", "POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT",
        "NODE_NAME",
    }  # fmt: skip
    assert env["HOSTNAME"] == "web" and env["HOME"] == "/nonexistent"


async def test_run_as_user_group_and_supplemental_groups_are_honoured(
    tmp_path: Path, mesh_dir: Path
) -> None:
    container = probe_container(mesh_dir, run_as_group=2345)
    seen, _ = await run_probe(
        tmp_path,
        mesh_dir,
        container,
        security_context=SecurityContext(run_as_user=1234, supplemental_groups=(77,)),
    )
    assert (seen["uid"], seen["gid"], seen["groups"]) == (1234, 2345, [77])
    assert seen["secret"] == "FileNotFoundError"


def _host_uid(pid: int | None) -> str:
    """The real uid of ``pid`` as the host sees it ("gone" if it exited already)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "gone"
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))


async def test_root_in_the_pod_cannot_unhide_the_folder(tmp_path: Path, mesh_dir: Path) -> None:
    unmount = textwrap.dedent(f"""\
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        status = open("/proc/self/status").read()
        host_uid = [l.split()[1] for l in status.splitlines() if l.startswith("Uid:")][0]
        rc = libc.umount2({str(mesh_dir).encode()!r}, 2)
        err = os.strerror(ctypes.get_errno()) if rc else "unmounted"
        try:
            content = open({str(mesh_dir / "root-key.pem")!r}).read()
        except OSError as exc:
            content = type(exc).__name__
        print("ROOT", os.getuid(), err, content, flush=True)
    """)
    events = Events()
    container = Container(
        "probe",
        command=(pod_python(), "-c", unmount),
        security_context=SecurityContext(run_as_user=0),
    )
    async with Supervisor(
        tmp_path / "state", on_event=events, isolation=Isolation.of(mesh_dir)
    ) as supervisor:
        await supervisor.start_pod(pod(tmp_path, container))
        started = await events.wait_for(EventKind.STARTED)
        host_uid = _host_uid(started[0].pid)
        await events.wait_for(EventKind.EXITED)
        log = supervisor.log_path("shop", "web", "probe").read_text()
    line = next(line for line in log.splitlines() if line.startswith("ROOT "))
    uid, error = line.split()[1:3]
    assert uid == "0"  # root in its user namespace...
    assert host_uid in ("65534", "gone")  # ...nobody on the host
    assert error != "unmounted" and line.endswith("FileNotFoundError")


async def test_run_as_non_root_with_uid_0_is_not_created(tmp_path: Path, mesh_dir: Path) -> None:
    events = Events()
    container = probe_container(mesh_dir, run_as_user=0, run_as_non_root=True)
    async with Supervisor(
        tmp_path / "state", on_event=events, isolation=Isolation.of(mesh_dir)
    ) as supervisor:
        await supervisor.start_pod(pod(tmp_path, container))
        await events.wait_for(EventKind.NOT_CREATED)
        status = supervisor.pod_status("shop", "web")
        assert status is not None
        (probe,) = status.containers
        assert probe.state is ContainerState.WAITING
        assert probe.reason == "CreateContainerConfigError"
        assert probe.restarts == 0 and probe.pid is None
        assert probe.message == (
            "container's runAsUser breaks non-root policy "
            '(pod: "web_shop(uid-web)", container: probe)'
        )
        assert "CreateContainerConfigError" in probe.describe()
        assert not events.of(EventKind.STARTED)
    log = supervisor.log_path("shop", "web", "probe").read_text()
    assert "CreateContainerConfigError: container's runAsUser breaks non-root policy" in log


async def test_the_meshs_own_processes_keep_its_user_and_environment(
    tmp_path: Path, mesh_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMBIENT_TEST_INHERITED", "yes")
    events = Events()
    async with Supervisor(tmp_path / "state", on_event=events) as supervisor:  # no isolation
        await supervisor.start_pod(pod(tmp_path, probe_container(mesh_dir)))
        await events.wait_for(EventKind.EXITED, timeout=TIMEOUT)
        log = supervisor.log_path("shop", "web", "probe").read_text()
    seen = json.loads(next(x for x in log.splitlines() if x.startswith("PROBE "))[6:])
    assert seen["uid"] == 0 and seen["secret"] == "PRIVATE"
    assert seen["env"]["AMBIENT_TEST_INHERITED"] == "yes"


async def test_a_working_folder_under_a_private_parent_is_reachable_alone(
    tmp_path: Path,
) -> None:
    """tmp_path's parents are 0700 root: the pod still runs from its folder by name (Python
    opens the script by its absolute path), and sees nothing else of the private parent."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "sibling-secret").write_text("PRIVATE")
    (private / "sibling-secret").chmod(0o644)
    work = private / "config"
    work.mkdir(mode=0o755)
    (work / "app.py").write_text(
        "import os\n"
        "print('APP', os.getcwd(), os.path.abspath(__file__),"
        " sorted(os.listdir(os.path.dirname(os.getcwd()))),"
        " os.path.exists(os.path.join(os.path.dirname(os.getcwd()), 'sibling-secret')),"
        " flush=True)\n"
    )
    (work / "app.py").chmod(0o644)
    events = Events()
    container = Container("probe", command=(pod_python(), "app.py"))
    async with Supervisor(
        tmp_path / "state", on_event=events, isolation=Isolation.of(tmp_path / "state")
    ) as supervisor:
        await supervisor.start_pod(pod(work, container))
        exited = await events.wait_for(EventKind.EXITED)
        log = supervisor.log_path("shop", "web", "probe").read_text()
    assert exited[0].exit_code == 0, log
    line = next(line for line in log.splitlines() if line.startswith("APP "))
    assert line == f"APP {work} {work / 'app.py'} ['config'] False"


async def test_a_command_the_pods_user_cannot_reach_says_why(tmp_path: Path) -> None:
    """A pod without runAsUser runs as nobody: a command under a 0700 folder is refused by
    exec, and the reason names the uid and what to change (CI's checkout was such a folder)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tool = private / "tool"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    events = Events()
    container = Container("probe", command=(str(tool),))
    async with Supervisor(
        tmp_path / "state", on_event=events, isolation=Isolation.of(tmp_path / "state")
    ) as supervisor:
        await supervisor.start_pod(pod(tmp_path, container))
        exited = await events.wait_for(EventKind.EXITED)
    assert exited[0].exit_code != 0
    reason = exited[0].message
    assert f"exec: Permission denied '{tool}'" in reason, reason
    assert "runs as uid 65534" in reason and "securityContext.runAsUser" in reason, reason
