"""Foreign HBONE peers for interop tests: the Go peer (net/http + crypto/tls) and nghttpx.

Everything here runs on loopback with bounded timeouts and event-based readiness
(a ``LISTENING host:port`` line, or nghttpx's ``Listening on`` log line): no sleeps.
Processes are started in their own session and always terminated, then killed
after a timeout, then reaped.

Typical use (see ``test_peers_selfcheck.py``)::

    binary = build_gopeer(cache_dir)
    with start_go_server(binary, cert, key, roots) as server:
        result = run_go_client(binary, server.addr, target, cert, key, roots, expect_san, b"hi")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import pytest

from ambient.gomod import GoNotFound, find_go

HERE = Path(__file__).resolve().parent
GOPEER_SRC = HERE / "gopeer"
CONNECT_PROXY = HERE / "connect_proxy.py"

START_TIMEOUT = 15.0  # seconds until a peer must report readiness
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL
RUN_TIMEOUT = 30.0  # seconds for a one-shot client or a build step

# Istio's HTTP/2 windows, applied to nghttpx (the Go peer cannot set them).
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024

# Exit codes of `gopeer client` (one-shot mode).
EXIT_OK, EXIT_STATUS, EXIT_TLS = 0, 2, 3


class PeerError(RuntimeError):
    """A peer failed to start or misbehaved; the message carries its output."""


# ---------------------------------------------------------------- building


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    root = Path(base) / "ambient-interop"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir()) / f"ambient-interop-{os.getuid()}"
        root.mkdir(parents=True, exist_ok=True)
    return root


def _source_digest(src: Path = GOPEER_SRC) -> str:
    h = hashlib.sha256()
    for path in sorted(src.iterdir()):
        if path.suffix == ".go" or path.name == "go.mod":
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def go_tool() -> str | None:
    """The machine's newest Go (>= 1.19, the peer's go.mod), or None."""
    try:
        return str(find_go((1, 19)).path)
    except GoNotFound:
        return None


def nghttpx_tool() -> str | None:
    return shutil.which("nghttpx") or next(
        (p for p in ("/usr/sbin/nghttpx", "/usr/bin/nghttpx") if os.access(p, os.X_OK)), None
    )


def require_nghttpx() -> str:
    tool = nghttpx_tool()
    if tool is None:
        pytest.skip("nghttpx not installed (Debian package nghttp2-proxy)")
    return tool


def build_gopeer(cache_dir: Path | None = None) -> Path:
    """Build the Go peer (std lib only, no network) unless a build of the same
    sources is cached; skip the calling test if ``go`` is not installed."""
    return build_go_program(GOPEER_SRC, "gopeer", cache_dir)


def build_go_program(src: Path, name: str, cache_dir: Path | None = None) -> Path:
    """Build the standard-library-only Go program in ``src`` unless a build of the same
    sources is cached (Go's build cache kept there too, so the first build of one
    program is the only slow one); skip the calling test if ``go`` is not installed."""
    go = go_tool()
    if go is None:
        pytest.skip(
            "no Go >= 1.19 installed (the Makefile expects the machine's Go in /usr/local/go)"
        )
    root = cache_dir or _cache_root()
    binary = root / f"{name}-{_source_digest(src)}"
    if binary.exists():
        return binary
    env = {
        **os.environ,
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(root / "gocache"),
        "GOPATH": str(root / "gopath"),
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    tmp = root / f".{binary.name}.{os.getpid()}.tmp"
    proc = subprocess.run(
        [go, "build", "-o", str(tmp), "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise PeerError(
            f"go build of {src} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    os.replace(tmp, binary)  # atomic: concurrent builders are harmless
    return binary


# ---------------------------------------------------------------- processes


class _LineCollector:
    """Reads a pipe on a thread; lets callers wait for a matching line."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._stream = stream
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self._stream:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(
        self, pattern: re.Pattern[str], timeout: float, start: int = 0
    ) -> re.Match[str] | None:
        """First match at or after line ``start``; None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    m = pattern.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        self._thread.join(STOP_TIMEOUT)
        self._stream.close()

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


class Peer:
    """A running peer process with captured stdout/stderr lines."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.addr = ""
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = _LineCollector(self.proc.stdout)
        self.stderr = _LineCollector(self.proc.stderr)

    @property
    def host(self) -> str:
        return self.addr.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.addr.rpartition(":")[2])

    def wait_ready(
        self, collector: _LineCollector, pattern: str, timeout: float = START_TIMEOUT
    ) -> str:
        m = collector.wait_for(re.compile(pattern), timeout)
        if m is None:
            self.stop()
            raise PeerError(f"{self.name} not ready within {timeout}s\n{self.output()}")
        return m.group(1)

    def wait_log(self, pattern: str, timeout: float = 5.0, start: int = 0) -> re.Match[str]:
        """Wait for a stderr line matching ``pattern`` (regex); fail with the log if none."""
        m = self.stderr.wait_for(re.compile(pattern), timeout, start)
        if m is None:
            raise AssertionError(
                f"{self.name}: no log line /{pattern}/ within {timeout}s\n{self.output()}"
            )
        return m

    def log_mark(self) -> int:
        """Index to pass as ``start`` to :meth:`wait_log` to ignore earlier lines."""
        return len(self.stderr.lines)

    def output(self) -> str:
        return (
            f"--- {self.name}: {' '.join(self.argv)}\n--- stdout:\n{self.stdout.text()}"
            f"\n--- stderr:\n{self.stderr.text()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL on timeout, reap; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.stdout.close()
        self.stderr.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- Go peer


def start_go_server(
    binary: Path,
    cert: Path,
    key: Path,
    roots: Path,
    *,
    trust_domain: str = "cluster.local",
    allow_targets: str = "127.0.0.0/8",
    log_headers: bool = True,
) -> Peer:
    """HBONE server on 127.0.0.1:<ephemeral>. stderr lines: ``ACCEPT ...``,
    ``HANDSHAKE-REJECT ... reason=...``, ``CONNECT authority=... peer=... status=...``."""
    argv = [
        str(binary), "server", "--listen", "127.0.0.1:0",
        "--cert", str(cert), "--key", str(key), "--roots", str(roots),
        "--trust-domain", trust_domain, "--allow-targets", allow_targets,
    ]  # fmt: skip
    if log_headers:
        argv.append("--log-headers")
    peer = Peer("gopeer-server", argv)
    peer.addr = peer.wait_ready(peer.stdout, r"^LISTENING (\S+)$")
    return peer


def _client_args(
    server: str,
    authority: str,
    cert: Path,
    key: Path,
    roots: Path,
    expect_san: str,
    forwarded: str | None,
    headers: Sequence[str],
) -> list[str]:
    argv = [
        "client", "--server", server, "--authority", authority,
        "--cert", str(cert), "--key", str(key), "--roots", str(roots),
        "--expect-san", expect_san,
    ]  # fmt: skip
    if forwarded is not None:
        argv += ["--forwarded", forwarded]
    for h in headers:
        argv += ["--header", h]
    return argv


def start_go_client(
    binary: Path,
    server: str,
    authority: str,
    cert: Path,
    key: Path,
    roots: Path,
    expect_san: str,
    *,
    forwarded: str | None = None,
    headers: Sequence[str] = (),
) -> Peer:
    """HBONE client in listener mode: each TCP connection accepted on ``peer.addr``
    becomes one CONNECT stream to ``authority`` over a shared HTTP/2 connection."""
    argv = [
        str(binary),
        *_client_args(server, authority, cert, key, roots, expect_san, forwarded, headers),
    ]
    argv += ["--listen", "127.0.0.1:0"]
    peer = Peer("gopeer-client", argv)
    peer.addr = peer.wait_ready(peer.stdout, r"^LISTENING (\S+)$")
    return peer


def run_go_client(
    binary: Path,
    server: str,
    authority: str,
    cert: Path,
    key: Path,
    roots: Path,
    expect_san: str,
    data: bytes = b"",
    *,
    forwarded: str | None = None,
    headers: Sequence[str] = (),
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """One CONNECT stream: ``data`` is sent then half-closed; stdout is what came
    back. returncode: 0 ok, 2 non-200 (stderr ``status=N``), 3 TLS/identity, 1 other."""
    argv = [
        str(binary),
        *_client_args(server, authority, cert, key, roots, expect_san, forwarded, headers),
    ]
    return subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)


def run_go_bench(
    binary: Path, cert: Path, key: Path, roots: Path, *args: str, timeout: float = 120.0
) -> dict[str, Any]:
    """``gopeer bench`` (e.g. ``"--mode", "setup", "--streams-total", "100"``); returns its JSON."""
    argv = [
        str(binary),
        "bench",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--roots",
        str(roots),
        *args,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise PeerError(f"gopeer bench failed ({proc.returncode}): {proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# ---------------------------------------------------------------- nghttpx


def _nghttpx_common(port: int) -> list[str]:
    return [
        "--conf=/dev/null",  # never read /etc/nghttpx/nghttpx.conf
        "--single-process",  # no worker process to orphan
        "--workers=1",
        "--no-ocsp",  # would run fetch-ocsp-response on the certificate
        "--errorlog-file=/dev/stderr",
        "--accesslog-file=/dev/stdout",
        f"--frontend-http2-window-size={STREAM_WINDOW}",
        f"--frontend-http2-connection-window-size={CONNECTION_WINDOW}",
        f"--backend-http2-window-size={STREAM_WINDOW}",
        f"--backend-http2-connection-window-size={CONNECTION_WINDOW}",
    ]


def _start_nghttpx(name: str, make_argv: Callable[[int], list[str]], attempts: int = 3) -> Peer:
    """nghttpx refuses port 0: pick a free port, retry if it was taken meanwhile.
    Ready when it logs ``Listening on 127.0.0.1:PORT`` (the socket is listening;
    connections queue in the backlog until the worker thread accepts them)."""
    tool = require_nghttpx()
    for _ in range(attempts):
        port = _free_port()
        peer = Peer(name, [tool, *make_argv(port)])
        m = peer.stderr.wait_for(re.compile(r"Listening on (127\.0\.0\.1:\d+)"), START_TIMEOUT)
        if m is not None:
            peer.addr = m.group(1)
            return peer
        peer.stop()
        if "Address already in use" not in peer.stderr.text():
            raise PeerError(f"{name} did not start\n{peer.output()}")
    raise PeerError(f"{name}: no free port after {attempts} attempts")


def start_nghttpx_hbone_client(
    backend: str,
    client_cert: Path,
    client_key: Path,
    *,
    extra: Sequence[str] = (),
) -> Peer:
    """nghttpx as HBONE *client*: plain HTTP/1.1 CONNECT proxy on ``peer.addr``;
    each ``CONNECT ip:port`` becomes an HTTP/2 CONNECT stream (``:authority`` =
    ip:port, header ``via: 1.1 nghttpx`` added, request headers passed through)
    over mutual TLS to the HBONE server ``backend``. The server certificate is
    NOT verified (``--insecure``): nghttpx can only verify hostnames, not SPIFFE ids.
    It does not propagate a client half-close (FIN -> RST_STREAM)."""
    host, _, port = backend.rpartition(":")

    def argv(fport: int) -> list[str]:
        return [
            *_nghttpx_common(fport),
            "--http2-proxy",
            f"--frontend=127.0.0.1,{fport};no-tls",
            f"--backend={host},{port};;proto=h2;tls",
            f"--client-cert-file={client_cert}",
            f"--client-private-key-file={client_key}",
            "--insecure",
            *extra,
        ]

    return _start_nghttpx("nghttpx-hbone-client", argv)


def start_connect_proxy(allow_prefix: str = "127.") -> Peer:
    """HTTP/1.1 CONNECT proxy (the backend nghttpx forwards CONNECT to)."""
    argv = [
        sys.executable,
        str(CONNECT_PROXY),
        "--listen",
        "127.0.0.1:0",
        "--allow-prefix",
        allow_prefix,
    ]
    peer = Peer("connect-proxy", argv)
    peer.addr = peer.wait_ready(peer.stdout, r"^LISTENING (\S+)$")
    return peer


def start_nghttpx_hbone_server(
    cert: Path,
    key: Path,
    roots: Path,
    connect_proxy: str,
    *,
    extra: Sequence[str] = (),
) -> Peer:
    """nghttpx as HBONE *server*: TLS 1.3, ALPN h2 only, client certificate
    required and chain-verified against ``roots`` (no SPIFFE trust-domain check),
    HTTP/2 CONNECT streams forwarded as HTTP/1.1 CONNECT to ``connect_proxy``
    (see :func:`start_connect_proxy`), whose status (200/400/503) is relayed.
    A client END_STREAM is not propagated to the target (no half-close)."""
    host, _, port = connect_proxy.rpartition(":")

    def argv(fport: int) -> list[str]:
        return [
            *_nghttpx_common(fport),
            "--http2-proxy",
            f"--frontend=127.0.0.1,{fport}",
            f"--backend={host},{port}",
            "--verify-client",
            f"--verify-client-cacert={roots}",
            "--tls-min-proto-version=TLSv1.3",
            "--tls-max-proto-version=TLSv1.3",
            "--npn-list=h2",
            *extra,
            str(key),
            str(cert),
        ]

    return _start_nghttpx("nghttpx-hbone-server", argv)


# ---------------------------------------------------------------- plain TCP helpers


def h1_connect(
    proxy: str, target: str, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, socket.socket, bytes]:
    """Send ``CONNECT target HTTP/1.1`` to an HTTP/1.1 proxy. Returns (status,
    socket, bytes already read past the response head). The caller closes the socket."""
    host, _, port = proxy.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise PeerError(f"proxy closed before a response: {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
    except BaseException:
        sock.close()
        raise
    return status, sock, rest


def recv_exactly(sock: socket.socket, n: int, already: bytes = b"") -> bytes:
    buf = bytearray(already)
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)))
        if not chunk:
            raise PeerError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock: socket.socket, already: bytes = b"") -> bytes:
    buf = bytearray(already)
    while chunk := sock.recv(65536):
        buf += chunk
    return bytes(buf)


@dataclass
class TcpTarget:
    """Threaded loopback TCP server standing in for a workload."""

    addr: str
    _sock: socket.socket
    _threads: list[threading.Thread]
    _conns: list[socket.socket]
    _lock: threading.Lock

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(STOP_TIMEOUT)
        with self._lock:
            for c in self._conns:
                c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_tcp_target(handler: Callable[[socket.socket], None]) -> TcpTarget:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    host, port = sock.getsockname()
    target = TcpTarget(f"{host}:{port}", sock, [], [], threading.Lock())

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            handler(conn)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.settimeout(30)
            t = threading.Thread(target=serve, args=(conn,), daemon=True)
            with target._lock:
                target._conns.append(conn)
                target._threads.append(t)
            t.start()

    t = threading.Thread(target=accept_loop, daemon=True)
    target._threads.append(t)
    t.start()
    return target


def echo_handler(conn: socket.socket) -> None:
    """Echo until EOF, then half-close: proves FIN travels both ways."""
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


BANNER = b"220 banner from the target\r\n"


def banner_handler(banner: bytes) -> Callable[[socket.socket], None]:
    """Send a banner and close at once (server-side close first)."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(banner)
        conn.shutdown(socket.SHUT_WR)

    return handler


@contextlib.contextmanager
def echo_target() -> Iterator[TcpTarget]:
    with start_tcp_target(echo_handler) as t:
        yield t
