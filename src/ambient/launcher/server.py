"""The launcher process: forks and execs containers on request, reports their exits.

Started by :class:`ambient.launcher.client.Launcher` as ``python -I -S -c ...``
with one end of a socket pair. It says ``hello`` (its ids and :func:`probe`'s
answer), then serves one request at a time:

- ``{"id", "op": "spawn", "spec": {...}, "log": PATH}`` → ``{"id", "pid"}`` once the
  child has exec'd (a close-on-exec pipe tells), or ``{"id", "error"}`` if it could
  not (nothing runs then);

and sends ``{"exit": PID, "returncode": N}`` (negative: killed by signal -N) for
each child it reaps.

It dies with its parent (``PR_SET_PDEATHSIG``, checked against the pid it was
given) and, when the socket closes, SIGKILLs what is left of its children's
process groups and exits; each child also dies with it. It is not dumpable,
so a process of the same user (an unprivileged mesh's pods) can neither trace
it nor read its memory or ``/proc`` entries. It ignores SIGINT (it has its own
session anyway): Ctrl-C stops the mesh through ``ambient up``, which stops the
pods gracefully before it closes this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

from ambient.launcher import sandbox
from ambient.launcher.wire import encode, recv_message

__all__ = ["main"]

_LOG_MODE = 0o600


class _Server:
    def __init__(self, sock: socket.socket, parent: int) -> None:
        self.sock = sock
        self.parent = parent
        self.children: set[int] = set()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode(message))

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(wake_read, selectors.EVENT_READ)
        self.send({"hello": sandbox.probe()})
        try:
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self.sock:
                        request = recv_message(self.sock)
                        if request is None:
                            return
                        self.handle(request)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_read, 4096)
                self.reap()
        finally:
            for pid in self.children:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.discard(pid)
                self.send({"exit": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def handle(self, request: dict[str, Any]) -> None:
        ident = request.get("id")
        if request.get("op") != "spawn" or not isinstance(request.get("spec"), dict):
            self.send({"id": ident, "error": f"unknown request {request.get('op')!r}"})
            return
        try:
            pid = self.spawn(request["spec"], str(request["log"]))
        except Exception as exc:
            self.send({"id": ident, "error": str(exc)})
        else:
            self.send({"id": ident, "pid": pid})

    def spawn(self, spec: dict[str, Any], log: str) -> int:
        log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _LOG_MODE)
        report_read, report_write = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child's coverage is not collected
                os.close(report_read)
                sandbox.enter(spec, log_fd=log_fd, report_fd=report_write, parent=os.getppid())
        finally:
            os.close(log_fd)
            os.close(report_write)
        report = b""
        try:
            while chunk := os.read(report_read, 65536):
                report += chunk
        finally:
            os.close(report_read)
        if not report:  # the pipe closed on exec
            self.children.add(pid)
            return pid
        os.waitpid(pid, 0)
        try:
            message = str(json.loads(report)["error"])
        except (ValueError, KeyError, TypeError):
            message = report.decode(errors="replace")
        raise OSError(message)


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(sandbox.PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0)
    sandbox.make_undumpable()
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def main(args: list[str]) -> None:
    """``FD PARENT_PID``: serve the socket ``FD`` until it closes."""
    fd, parent = int(args[0]), int(args[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    try:
        _Server(sock, parent).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    sys.exit(0)
