"""Linux network namespaces: names, the ``ip`` tool, and sockets made inside a namespace.

A socket belongs to the network namespace of the thread that created it, for
its whole life, whichever thread uses it afterwards. So ztunnel (one process,
one event loop) serves many pods as Istio's in-pod mode does: a
:class:`NetnsThread` is one thread that joined a pod's namespace with
``setns(2)``; it creates listening and dialling sockets there, and the event
loop then uses them like any other socket.

Everything the mesh creates is named with a per-mesh prefix derived from the
state folder (:func:`mesh_prefix`), so ``ambient down`` can find and remove it
after a crash without any record surviving.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ambient.sockconnect import connect as connect_socket

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
SO_MARK = 36
SO_ORIGINAL_DST = 80  # SOL_IP option: the destination before a REDIRECT/DNAT
ZTUNNEL_MARK = 0x539
"""Socket mark on ztunnel's own sockets in a pod's namespace: never re-captured (Istio's value)."""
SPOOF_MARK = 0x111
"""Connection (and then packet) mark of connections ztunnel made into a pod's namespace: the
replies are routed back to ztunnel's socket, whatever source address it took (Istio's value)."""
SPOOF_TABLE = 100
"""Routing table of a pod's namespace with ``local 0.0.0.0/0 dev lo``, for :data:`SPOOF_MARK`."""
IP_TRANSPARENT = 19  # SOL_IP option: bind to an address that is not the host's


class NetnsError(Exception):
    """A namespace operation failed; the message names the command and the kernel's answer."""


def mesh_prefix(state_root: Path) -> str:
    """``amb`` + 6 hex digits of the state folder's path: the same folder, the same prefix."""
    digest = hashlib.sha256(str(Path(state_root).absolute()).encode()).hexdigest()
    return f"amb{digest[:6]}"


def missing_capability() -> str | None:
    """Why ``--netns`` cannot work here, or None when it can (root, ``ip``, ``nft``)."""
    if os.geteuid() != 0:
        return "--netns needs root (network namespaces, veth links and nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"--netns needs the `{tool}` tool (Debian: iproute2 / nftables)"
    return None


def is_path(netns: str) -> bool:
    """Whether ``netns`` is a path (a namespace a container runtime made, e.g.
    ``/var/run/netns/cni-...``) rather than the name of one of ours in ``/run/netns``."""
    return netns.startswith("/")


def run(*argv: str, netns: str | None = None, stdin: str | None = None, check: bool = True) -> str:
    """Run ``argv`` (inside ``netns`` when given: ``ip netns exec`` for a name, which also
    mounts its ``/etc/netns`` files, ``nsenter --net`` for a path); returns stdout."""
    if netns and is_path(netns):
        full = ["nsenter", f"--net={netns}", "--", *argv]
    else:
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    result = subprocess.run(full, input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"`{' '.join(full)}` failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """``ip [-n NETNS] ARGS`` (a namespace given by path: run inside it)."""
    if netns and is_path(netns):
        return run("ip", *args, netns=netns, check=check)
    where = ("-n", netns) if netns else ()
    return run("ip", *where, *args, check=check)


def nft(script: str, *, netns: str) -> None:
    """Load an nftables script atomically inside ``netns`` (all of it applies, or none)."""
    run("nft", "-f", "-", netns=netns, stdin=script)


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def add_netns(name: str) -> None:
    """Create the named namespace with its loopback up (no-op if it exists)."""
    if not (NETNS_RUN_DIR / name).exists():
        ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Remove the named namespace and its ``/etc/netns`` files; links in it go with it."""
    if (NETNS_RUN_DIR / name).exists():
        ip("netns", "delete", name, check=False)
    shutil.rmtree(NETNS_ETC_DIR / name, ignore_errors=True)


def sysctl(netns: str, **settings: str) -> None:
    """Set ``net.*`` sysctls inside ``netns`` (names with dots given as ``a__b`` → ``a.b``)."""
    pairs = [f"{k.replace('__', '.')}={v}" for k, v in settings.items()]
    run("sysctl", "-q", "-w", *pairs, netns=netns)


_libc: Any = None


def _setns(path: Path, inode: int | None = None) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if inode is not None and os.fstat(fd).st_ino != inode:
            raise NetnsError(f"{path} is not the namespace expected (inode {inode}): re-made")
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_path(netns: str) -> Path:
    """The file of a namespace given by name (``/run/netns/<name>``) or by path."""
    return Path(netns) if is_path(netns) else NETNS_RUN_DIR / netns


def netns_inode(name: str) -> int:
    """The inode of the namespace: it identifies that namespace for its whole life."""
    return netns_path(name).stat().st_ino


NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type


def check_network_namespace(path: Path) -> int:
    """``path``'s inode if it is a network namespace other than this process's own; else
    :class:`NetnsError` saying what it is. (Redirection rules meant for a pod must never
    land in the host's namespace, which is where a node agent runs.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise NetnsError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            raise NetnsError(f"{path} is not a namespace file") from None
        if kind != CLONE_NEWNET:
            raise NetnsError(f"{path} is a namespace, but not a network namespace")
        found = os.fstat(fd)
        own = os.stat("/proc/self/ns/net")
        if (found.st_dev, found.st_ino) == (own.st_dev, own.st_ino):
            raise NetnsError(f"{path} is the node agent's own (the host's) network namespace")
        return found.st_ino
    finally:
        os.close(fd)


class NetnsThread:
    """One thread inside a network namespace; makes sockets there for the event loop."""

    def __init__(self, name: str, *, inode: int | None = None) -> None:
        """``name``: a namespace of ``/run/netns``, or a path (:func:`is_path`). ``inode``: the
        namespace must be this one (see :func:`netns_inode`), not one made later under the
        same name."""
        self.name = name
        self.path = netns_path(name)
        try:
            found = self.path.stat().st_ino
        except FileNotFoundError:
            raise NetnsError(f"network namespace {name} does not exist ({self.path})") from None
        if inode is not None and found != inode:
            raise NetnsError(f"network namespace {name} was re-made (inode {found}, not {inode})")
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"netns-{name}",
            initializer=_setns,
            initargs=(self.path, inode),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def listen_tcp(self, host: str, port: int, *, backlog: int = 1024) -> socket.socket:
        """A non-blocking TCP listener on ``host:port`` inside the namespace."""
        sock: socket.socket = await self._call(_tcp_listener, host, port, backlog)
        return sock

    async def bind_udp(self, host: str, port: int) -> socket.socket:
        """A non-blocking UDP socket bound to ``host:port`` inside the namespace."""
        sock: socket.socket = await self._call(_udp_socket, host, port)
        return sock

    async def dial(
        self, host: str, port: int, *, mark: int = ZTUNNEL_MARK, source: str | None = None
    ) -> socket.socket:
        """A TCP connection to ``host:port`` from inside the namespace, marked ``mark``.

        With ``source``, the connection comes *from* that address (``IP_TRANSPARENT``), as
        Istio's ztunnel connects to an application as its caller: the namespace's
        :data:`SPOOF_MARK` rules route the replies back here (``ambient.ztunnel.capture``)."""
        sock: socket.socket = await self._call(_marked_socket, mark, source)
        try:
            await connect_socket(sock, (host, port))  # an IP literal: no resolver trip
        except BaseException:
            sock.close()
            raise
        return sock


def _tcp_listener(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, ZTUNNEL_MARK)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _marked_socket(mark: int, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.bind((source, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """``SO_ORIGINAL_DST`` of a redirected IPv4 connection: (ip, port) before the REDIRECT."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise NetnsError("connection was not redirected (no original destination)") from None
        raise
    port = int.from_bytes(raw[2:4], "big")
    return socket.inet_ntoa(raw[4:8]), port
