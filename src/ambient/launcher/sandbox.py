"""What a container's process does between fork and exec, and what this host can isolate.

:func:`enter` runs in the child the launcher forks (one thread, no gRPC: Python
is safe there) and ends in ``execve``. In order:

1. Its own session and process group; default signal dispositions (Python
   ignores SIGPIPE and SIGXFSZ, and exec would keep that); stdin from
   ``/dev/null``, stdout and stderr to the log the launcher opened; every other
   file descriptor closed.
2. ``netns``: the pod's network namespace, entered as ``ip netns exec`` does:
   a new mount namespace (``/`` made a recursive slave, so nothing propagates
   back), ``/sys`` mounted afresh for that namespace, and each entry of
   ``/etc/netns/<name>/`` bind-mounted over ``/etc/<entry>`` (``resolv.conf``).
3. ``hide``: each folder is covered by an empty, read-only tmpfs in the
   child's mount namespace. As root that is a plain mount namespace; an
   unprivileged launcher first enters a user namespace of its own that maps
   only its own uid and gid (the kernel lets any user do that where
   unprivileged user namespaces are enabled, see :func:`probe`).
4. The working folder. As root, for a user who cannot traverse one of its
   parents (a 0700 home folder, pytest's 0700 temporary folders), that parent
   is covered by a tmpfs holding only the path down to the working folder,
   which is bind-mounted there (with its own mounts, so hidden folders stay
   hidden): the pod sees its folder at its own path, and nothing else of that
   parent, as a container sees its image. What it can read in the folder is
   still decided by the modes of the folder and its files.
5. ``user``: as root, ``setgroups``/``setresgid``/``setresuid`` to the host ids
   (which drops every capability). When the ids the pod should see differ from
   its host ids (a pod that asks for uid 0 runs as uid 0 in a user namespace
   and as an unprivileged uid on the host), a user namespace mapping exactly
   those ids is entered last: the mounts of step 3 come from a more privileged
   mount namespace and are *locked* there, so not even that namespace's root
   can unmount them.
6. ``PR_SET_PDEATHSIG`` (SIGKILL when the launcher dies; last, since changing
   credentials clears it), then ``execvpe`` with the container's ``PATH``.

Any failure raises :class:`SandboxError` naming the step; the launcher reports
it and the container does not run. Standard library only.

Ptrace: the launcher is not dumpable (see ``server``), the child inherits that,
and a credential change keeps it so; after it enters a user namespace it has
that namespace's capabilities, which another pod (a sibling namespace, no
capabilities there) cannot trace. It turns dumpable again there only because
writing its own ``uid_map`` needs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
from typing import Any, NoReturn

__all__ = ["NOBODY", "SandboxError", "enter", "isolate", "make_undumpable", "probe"]

NOBODY = 65534
"""``nobody``/``nogroup``: the host ids of a pod that is root only in its user namespace."""

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
NETNS_DIR = "/run/netns"
_HIDE_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
try:
    _libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _libc.unshare.argtypes = [ctypes.c_int]
    _libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except AttributeError:  # pragma: no cover - not Linux: importable, nothing isolates
    pass


class SandboxError(Exception):
    """A step of :func:`enter` failed; ``str()`` is ``step: reason``."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step


def _call(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str, flags: int, data: str | None = None) -> None:
    _call(
        _libc.mount(
            source.encode(), target.encode(), fstype.encode(), flags, data and data.encode()
        ),
        f"mount {fstype} on {target}",
    )


def _unshare(flags: int) -> None:
    _call(_libc.unshare(flags), "unshare")


def _prctl(option: int, value: int) -> None:
    _call(_libc.prctl(option, value, 0, 0), "prctl")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _user_namespace(uid: int, gid: int) -> None:
    """Enter a new user and mount namespace where this process is ``uid``/``gid``, mapped
    to the ids it has now (the one mapping an unprivileged process may write)."""
    host_uid, host_gid = os.geteuid(), os.getegid()
    _unshare(CLONE_NEWUSER | CLONE_NEWNS)
    # Writing our own maps needs /proc/self owned by us again (see the module docs).
    _prctl(PR_SET_DUMPABLE, 1)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {host_uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {host_gid} 1\n")


def _enter_netns(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise SandboxError("netns", f"bad network namespace name {name!r}")
    fd = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _call(_libc.setns(fd, CLONE_NEWNET), f"setns {name}")
    finally:
        os.close(fd)
    _unshare(CLONE_NEWNS)
    _mount("none", "/", "none", MS_SLAVE | MS_REC)
    flags = 0
    if _libc.umount2(b"/sys", MNT_DETACH) != 0 and os.statvfs("/sys").f_flag & os.ST_RDONLY:
        flags = MS_RDONLY  # a read-only /sys cannot be shadowed by a writable one
    _mount(name, "/sys", "sysfs", flags)
    etc = f"/etc/netns/{name}"
    if os.path.isdir(etc):
        for entry in sorted(os.listdir(etc)):
            try:
                _mount(f"{etc}/{entry}", f"/etc/{entry}", "none", MS_BIND)
            except OSError as exc:  # as ip netns exec: say so, go on
                os.write(2, f"ambient: bind {etc}/{entry} -> /etc/{entry}: {exc}\n".encode())


def _mount_namespace() -> None:
    """A mount namespace of our own where mounts do not propagate back."""
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNS)
    else:
        _user_namespace(os.geteuid(), os.getegid())
    _mount("none", "/", "none", MS_SLAVE | MS_REC)


def _hide(paths: list[str]) -> None:
    for path in paths:
        _mount("tmpfs", path, "tmpfs", _HIDE_FLAGS, "size=4k,mode=0555")


def _searchable(path: str, uid: int, gid: int, groups: list[int]) -> bool:
    """Whether ``uid`` (with ``gid``, ``groups``) may traverse folder ``path`` (mode bits)."""
    info = os.stat(path)
    if uid == info.st_uid:
        return bool(info.st_mode & 0o100)
    if info.st_gid == gid or info.st_gid in groups:
        return bool(info.st_mode & 0o010)
    return bool(info.st_mode & 0o001)


def _expose_workdir(cwd: str, user: dict[str, Any]) -> None:
    """Make the working folder reachable at its own path by a user who cannot traverse one
    of its parents: that parent is covered (in this mount namespace) by a tmpfs holding
    only the path down to the folder, which is bind-mounted there with what is mounted in
    it (hidden folders stay hidden). The pod sees its folder and nothing else of the parent."""
    uid, gid = int(user["hostUid"]), int(user["hostGid"])
    groups = [int(g) for g in user.get("groups", ())]
    folder = os.path.realpath(cwd)
    parts = [p for p in folder.split("/") if p]
    blocked = None
    for depth in range(len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        if not _searchable(ancestor, uid, gid, groups):
            blocked = depth
            break
    if blocked is None or blocked == 0:  # all reachable (or "/" itself is not: give up)
        return
    top = "/" + "/".join(parts[:blocked])
    handle = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=16k,mode=0755")
        inner = top
        for part in parts[blocked:]:
            inner = f"{inner}/{part}"
            os.mkdir(inner, 0o755)
        _mount(f"/proc/self/fd/{handle}", inner, "none", MS_BIND | MS_REC)
    finally:
        os.close(handle)
    _mount("none", top, "none", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _become(user: dict[str, Any]) -> None:
    uid, gid = int(user["uid"]), int(user["gid"])
    host_uid, host_gid = int(user["hostUid"]), int(user["hostGid"])
    mapped = (uid, gid) != (host_uid, host_gid)
    if os.geteuid() == 0:
        os.setgroups([] if mapped else [int(g) for g in user.get("groups", ())])
        os.setresgid(host_gid, host_gid, host_gid)
        os.setresuid(host_uid, host_uid, host_uid)
    elif (os.geteuid(), os.getegid()) != (host_uid, host_gid):
        raise SandboxError(
            "user", f"cannot run as uid {host_uid} gid {host_gid}: the launcher is not root"
        )
    if mapped:
        _user_namespace(uid, gid)


def isolate(spec: dict[str, Any]) -> None:
    """Steps 2 to 5 on this process (``ambient exec`` runs them before its own exec):
    ``netns``, ``hide``, ``cwd``, ``user`` of ``spec``; SandboxError naming the step."""
    step = "netns"
    try:
        netns = spec.get("netns")
        if netns:
            _enter_netns(str(netns))
        hide = [str(p) for p in spec.get("hide", ())]
        user: dict[str, Any] | None = spec.get("user")
        expose = user is not None and os.geteuid() == 0 and int(user["hostUid"]) != 0
        if (hide or expose) and not netns:  # (entering a netns made one)
            step = "mount"
            _mount_namespace()
        if hide:
            step = "hide"
            _hide(hide)
        step = "workdir"
        if expose and user is not None:
            _expose_workdir(str(spec["cwd"]), user)
        os.chdir(str(spec["cwd"]))
        if user:
            step = "user"
            _become(user)
    except SandboxError:
        raise
    except Exception as exc:
        raise SandboxError(step, _reason(exc)) from None


def enter(spec: dict[str, Any], *, log_fd: int, report_fd: int, parent: int) -> NoReturn:
    """Set this (forked) process up as ``spec`` says and exec it; never returns.

    ``spec``: ``argv``, ``env``, ``cwd``, and optionally ``netns``, ``hide`` (folders)
    and ``user`` (``uid``, ``gid``, ``hostUid``, ``hostGid``, ``groups``).
    """
    step = "signals"
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        step = "session"
        os.setsid()
        step = "log"
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, 1 << 20)
        isolate(spec)
        step = "pdeathsig"
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the launcher died before prctl: nobody would kill us
            os._exit(128 + int(signal.SIGKILL))
        step = "exec"
        argv = [str(a) for a in spec["argv"]]
        os.execvpe(argv[0], argv, {str(k): str(v) for k, v in spec["env"].items()})
    except SandboxError as exc:
        _report(report_fd, str(exc))
    except PermissionError as exc:
        _report(report_fd, f"{step}: {_reason(exc)}{_access_hint(step)}")
    except BaseException as exc:
        _report(report_fd, f"{step}: {_reason(exc)}")
    os._exit(127)


def _access_hint(step: str) -> str:
    """Why exec may be refused to a pod that runs as another user than the mesh's."""
    if step != "exec":
        return ""
    return (
        f" (the container runs as uid {os.getuid()} gid {os.getgid()}: it needs search"
        " permission on every folder of the command's path, and its interpreter's;"
        " grant that, or set the container's securityContext.runAsUser)"
    )


def make_undumpable() -> None:
    """``PR_SET_DUMPABLE`` 0 for this process: no ptrace, no ``/proc/PID/{mem,environ,fd,
    root}`` for processes of the same user without ``CAP_SYS_PTRACE`` (a pod of an
    unprivileged mesh runs as the mesh's user); it lasts until the next exec."""
    prctl = getattr(_libc, "prctl", None)
    if prctl is not None and prctl(PR_SET_DUMPABLE, 0, 0, 0) != 0:  # pragma: no cover
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename!r}" if exc.filename is not None else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def _report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps({"error": message}).encode())


def probe() -> dict[str, Any]:
    """What this host lets the launcher do: its ids, whether it is root, and whether a
    process can make a user namespace and mount in it (as ``nobody`` when we are root:
    what a pod that asks for uid 0 needs)."""
    info: dict[str, Any] = {
        "uid": os.geteuid(),
        "gid": os.getegid(),
        "privileged": os.geteuid() == 0,
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            _user_namespace(os.geteuid(), os.getegid())
            _mount("none", "/", "none", MS_SLAVE | MS_REC)
            _hide(["/tmp"])
        except BaseException as exc:
            _report(write, _reason(exc))
            os._exit(1)
        os._exit(0)
    os.close(write)
    answer = b""
    while chunk := os.read(read, 4096):
        answer += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    ok = os.waitstatus_to_exitcode(status) == 0
    info["userns"] = ok
    if not ok:
        error = json.loads(answer).get("error", "") if answer else f"status {status}"
        info["usernsError"] = str(error)
    return info
