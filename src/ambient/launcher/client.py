"""The runtime's side of the launcher: start it, ask it to spawn, hear about exits.

One :class:`Launcher` per ``Supervisor`` (or shared); it starts the launcher
process on first use with ``subprocess.Popen`` and no ``preexec_fn`` (so
``vfork``: no atfork handler of gRPC runs), from the event loop's thread (the
launcher's ``PR_SET_PDEATHSIG`` fires when the thread that started it exits).
If the launcher dies, its children die with it (their own
``PR_SET_PDEATHSIG``): every process it reported is then reported exited with
SIGKILL, and the next spawn starts a new launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ambient
from ambient.launcher.wire import HEADER_SIZE, WireError, decode_body, decode_length, encode

__all__ = ["HostInfo", "Launched", "Launcher"]

log = logging.getLogger("ambient.launcher")

_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ambient.launcher.server import main; main(sys.argv[2:])"
)
_PACKAGE_ROOT = str(Path(ambient.__file__).resolve().parents[1])
_CLOSE_TIMEOUT = 5.0
_KILLED = -9


@dataclass(frozen=True)
class HostInfo:
    """What the launcher found it can do on this host (its ``hello``)."""

    uid: int
    gid: int
    privileged: bool
    """Root: pods can run as other users, in their own mount namespaces."""
    userns: bool
    """A process (``nobody`` if we are root) can make a user namespace and mount in it."""
    userns_error: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostInfo:
        return cls(
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            privileged=bool(data["privileged"]),
            userns=bool(data["userns"]),
            userns_error=str(data.get("usernsError", "")),
        )


_Reply = tuple[dict[str, Any], "asyncio.Future[int] | None"]
"""A spawn's answer and, if it started, the future of its exit."""


class Launched:
    """A process the launcher started: its pid, and its exit."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self._exited = exited

    async def wait(self) -> int:
        """The return code once it exited (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)


def _popen(sock: socket.socket) -> subprocess.Popen[bytes]:
    """The launcher process, on ``sock``. Popen without ``preexec_fn``: CPython uses vfork
    (no atfork handlers run), which is the point; asyncio's subprocess under uvloop forks."""
    return subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            _PACKAGE_ROOT,
            str(sock.fileno()),
            str(os.getpid()),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        pass_fds=(sock.fileno(),),
        start_new_session=True,
    )


class Launcher:
    """Talks to one launcher process (see the module docs)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._host: HostInfo | None = None
        self._hello: asyncio.Future[HostInfo] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[_Reply]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._lock = asyncio.Lock()
        self._closing = False

    @property
    def host(self) -> HostInfo:
        """The launcher's ``hello`` (after :meth:`start`)."""
        if self._host is None:
            raise RuntimeError("the launcher is not started")
        return self._host

    @property
    def pid(self) -> int | None:
        """The launcher process's pid, while it runs."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> HostInfo:
        """Start the launcher process unless it runs; its ``hello``."""
        async with self._lock:
            if self._writer is not None and self._host is not None:
                return self._host  # running
            if self._closing:
                raise RuntimeError("the launcher is closed")
            if self._process is not None:  # a launcher that died: reap it first
                await self._reap(self._process)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._process = _popen(theirs)
            finally:
                theirs.close()
            reader, self._writer = await asyncio.open_unix_connection(sock=ours)
            loop = asyncio.get_running_loop()
            self._hello = loop.create_future()
            self._reader = asyncio.ensure_future(self._read(reader))
            try:
                self._host = await asyncio.wait_for(asyncio.shield(self._hello), 30)
            except (TimeoutError, ConnectionError) as exc:
                self.kill()
                raise OSError(f"the pod launcher did not start: {exc}") from None
            return self._host

    async def spawn(self, spec: dict[str, Any], log_path: Path) -> Launched:
        """Start ``spec`` (see ``sandbox.enter``) with output appended to ``log_path``;
        OSError naming the failed step if it could not exec."""
        await self.start()
        assert self._writer is not None
        ident = next(self._ids)
        reply: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._pending[ident] = reply
        try:
            self._writer.write(
                encode({"id": ident, "op": "spawn", "spec": spec, "log": str(log_path)})
            )
            answer, exited = await reply
        finally:
            self._pending.pop(ident, None)
        if exited is None:
            raise OSError(str(answer.get("error", answer)))
        return Launched(int(answer["pid"]), exited)

    async def close(self) -> None:
        """Close the socket; the launcher kills what is left of its children and exits."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._process is not None:
            await self._reap(self._process)

    @staticmethod
    async def _reap(process: subprocess.Popen[bytes]) -> None:
        try:
            await asyncio.to_thread(process.wait, _CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)

    def kill(self) -> None:
        """SIGKILL the launcher now (its children get SIGKILL from the kernel)."""
        self._closing = True
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    # -- reading ---------------------------------------------------------------------------

    def _exit_future(self, pid: int) -> asyncio.Future[int]:
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
        return future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        error: BaseException = ConnectionError("the pod launcher exited")
        try:
            while True:
                header = await reader.readexactly(HEADER_SIZE)
                message = decode_body(await reader.readexactly(decode_length(header)))
                self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except WireError as exc:
            error = ConnectionError(f"the pod launcher sent a bad message: {exc}")
            log.error("%s", error)
        finally:
            self._lost(error)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "hello" in message:
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(HostInfo.from_json(message["hello"]))
        elif "exit" in message:
            future = self._exit_future(int(message["exit"]))
            if not future.done():
                future.set_result(int(message["returncode"]))
            self._exits.pop(int(message["exit"]), None)
        elif "id" in message:
            # Its exit may be the very next message, read before the caller resumes.
            exited = self._exit_future(int(message["pid"])) if "pid" in message else None
            reply = self._pending.get(int(message["id"]))
            if reply is not None and not reply.done():
                reply.set_result((message, exited))

    def _lost(self, error: BaseException) -> None:
        """The launcher is gone: so are its children (PR_SET_PDEATHSIG)."""
        if not self._closing:
            log.warning("the pod launcher exited; its processes were killed with it")
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(error)
        for future in self._exits.values():
            if not future.done():
                future.set_result(_KILLED)
        self._exits.clear()
