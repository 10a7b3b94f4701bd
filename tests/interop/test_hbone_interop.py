"""Our HBONE against HTTP/2 stacks we did not write: Go net/http (``gopeer``) and nghttpx.

Both directions, identities checked both ways:

1. Go client -> our server (``HboneServer`` + ``relay``) -> loopback target
2. our client (``ConnectionPool``) -> Go server -> loopback target
3. curl / HTTP/1.1 CONNECT -> nghttpx (HBONE client) -> our server -> target
4. our client -> nghttpx (HBONE server) -> ``connect_proxy.py`` -> target

The peers themselves are proven in ``test_peers_selfcheck.py``: a failure here is ours.
Blocking peer I/O (one-shot Go client, curl, plain sockets to nghttpx) runs in a
thread so that our server keeps serving on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from ambient.hbone.errors import ConnectFailed, HboneError, StreamRefused, StreamReset
from ambient.hbone.messages import ConnectRequest, SocketAddress, Status
from ambient.hbone.pool import ConnectionPool
from ambient.hbone.server import HboneServer
from ambient.hbone.splice import connect_relay
from ambient.hbone.stream import HboneStream
from ambient.identity.certs import WorkloadCertificate
from ambient.identity.spiffe import SpiffeId
from tests.component.hbone.harness import LOOPBACK, LogWatcher, Upstream, read_all
from tests.pki import (
    cert_from_unknown_ca,
    cert_in_other_trust_domain,
    cert_with_other_trust_domain_san,
    cert_without_spiffe_san,
    expired_cert,
    issue,
    make_ca,
    write_pem_files,
)

from . import peers

pytestmark = pytest.mark.interop

SERVER = SpiffeId.workload("interop", "server")
CLIENT = SpiffeId.workload("interop", "client")
FORWARDED_FOR = "127.0.0.1:40000"
FORWARDED = f'for="{FORWARDED_FOR}"'
STEP = 20.0  # seconds: bound on any single exchange
# A one-shot Go client starts uploading while our SETTINGS may still be un-ACKed,
# which our side mishandles (SETTINGS_BUG, test_our_*_honours_its_settings_before_the_ack):
# its uploads stay below 16 KiB (one default-sized frame, well inside the default
# window). Large transfers from Go go over a warmed-up connection.
ONE_SHOT_UPLOAD = 16_000

# ------------------------------------------------------------------------ PKI


@dataclass(frozen=True)
class Party:
    """A workload certificate and the same as PEM files, for the foreign peers.

    ``roots`` is always the mesh root: every party trusts our mesh, whoever
    signed its own certificate, so only the other side's check can fail.
    """

    cert: WorkloadCertificate
    chain: Path
    key: Path
    roots: Path


class Mesh:
    """Our CA (``tests.pki``), the two legitimate workloads, and bad certificates on demand."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = make_ca(directory)
        self._parties: dict[str, Party] = {}
        self.server = self.party("server", lambda m: issue(m.ca, "interop", "server"))
        self.client = self.party("client", lambda m: issue(m.ca, "interop", "client"))

    def party(self, name: str, make: Callable[[Mesh], WorkloadCertificate]) -> Party:
        if name not in self._parties:
            cert = dataclasses.replace(make(self), roots_pem=self.ca.roots_pem())
            chain, key, roots = write_pem_files(self.dir / "parties" / name, cert)
            self._parties[name] = Party(cert, chain, key, roots)
        return self._parties[name]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    return Mesh(tmp_path_factory.mktemp("hbone-interop-pki"))


MakeCert = Callable[[Mesh], WorkloadCertificate]

# Client certificates our server must refuse, with the reason its log line gives.
BAD_CLIENTS: dict[str, tuple[MakeCert, str]] = {
    "unknown-ca": (
        lambda m: cert_from_unknown_ca(m.dir, CLIENT),
        "certificate verify failed: unable to get local issuer certificate",
    ),
    "expired": (lambda m: expired_cert(m.ca, CLIENT), "certificate has expired"),
    "no-spiffe-san": (lambda m: cert_without_spiffe_san(m.ca, CLIENT), "has no SPIFFE URI SAN"),
    "other-td-ca": (
        lambda m: cert_in_other_trust_domain(m.dir),
        "certificate verify failed: unable to get local issuer certificate",
    ),
    "other-td-san": (
        lambda m: cert_with_other_trust_domain_san(m.ca),
        "client identity spiffe://evil.example/ns/x/sa/y is from trust domain 'evil.example', "
        "not 'cluster.local'",
    ),
}

# Server certificates our client must refuse, with the ConnectFailed message it gives.
BAD_SERVERS: dict[str, tuple[MakeCert, str]] = {
    "wrong-identity": (
        lambda m: issue(m.ca, "interop", "impostor"),
        f"server identity spiffe://cluster.local/ns/interop/sa/impostor is not the expected {SERVER}",
    ),
    "unknown-ca": (
        lambda m: cert_from_unknown_ca(m.dir, SERVER),
        "certificate verify failed: unable to get local issuer certificate",
    ),
    "expired": (lambda m: expired_cert(m.ca, SERVER), "certificate has expired"),
    "no-spiffe-san": (lambda m: cert_without_spiffe_san(m.ca, SERVER), "has no SPIFFE URI SAN"),
}

# ------------------------------------------------------------------------ our side


class OurServer:
    """Our ``HboneServer`` forwarding each CONNECT to its loopback target (like the
    component harness's ``ForwardingServer``, but it records every stream and never
    leaks a target connection, whatever the stream does)."""

    def __init__(self, certificate: WorkloadCertificate) -> None:
        self.server = HboneServer(lambda: certificate, self._handle)
        self.addr = ""
        self.streams: list[HboneStream] = []
        self.deny_ports: set[int] = set()  # targets answered 401

    async def start(self) -> None:
        host, port = await self.server.start("127.0.0.1", 0)
        self.addr = f"{host}:{port}"

    @property
    def connection_count(self) -> int:
        return len(self.server.connections)

    async def _handle(self, stream: HboneStream) -> None:
        self.streams.append(stream)
        target = stream.request.authority
        if target.ip not in LOOPBACK:
            stream.respond(Status.BAD_REQUEST)
            return
        if target.port in self.deny_ports:
            stream.respond(Status.UNAUTHORIZED)
            return
        try:
            tcp = await connect_relay(stream, str(target.ip), target.port)
        except OSError:
            stream.respond(Status.SERVICE_UNAVAILABLE)
            return
        try:
            stream.respond(Status.OK)
            tcp.start()
            await tcp.done
        finally:
            if tcp.transport is not None:
                tcp.transport.close()


@pytest.fixture
async def ours(mesh: Mesh) -> AsyncIterator[OurServer]:
    server = OurServer(mesh.server.cert)
    await server.start()
    try:
        yield server
    finally:
        await server.server.close()


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(connect_timeout=5)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def refusals() -> Iterator[LogWatcher]:
    with LogWatcher("refused connection") as watcher:
        yield watcher


@pytest.fixture
async def after_eof() -> AsyncIterator[Upstream]:
    """Target that answers only once it saw our FIN: proves half-close end to end."""
    app = Upstream(mode="after-eof")
    await app.start()
    try:
        yield app
    finally:
        await app.close()


def request_to(target: str) -> ConnectRequest:
    return ConnectRequest(
        SocketAddress.parse(target),
        forwarded_for=SocketAddress.parse(FORWARDED_FOR),
        baggage="k=v",
    )


async def open_stream(
    pool: ConnectionPool,
    server: str,
    target: str,
    source: WorkloadCertificate,
    expected: SpiffeId = SERVER,
) -> HboneStream:
    async with asyncio.timeout(STEP):
        return await pool.open_stream(
            source=source,
            destination=SocketAddress.parse(server),
            expected=[expected],
            request=request_to(target),
        )


async def read_exactly(stream: HboneStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def stream_echo_half_close(stream: HboneStream, size: int) -> None:
    """Send ``size`` bytes, END_STREAM, expect the same bytes back, then a clean EOF."""
    data = os.urandom(size)

    async def send() -> None:
        stream.write(data)
        await stream.drain()
        stream.write_eof()

    async with asyncio.timeout(STEP):
        got, _ = await asyncio.gather(read_all(stream), send())
    assert got == data
    assert stream.at_eof


async def stream_ping_pong(stream: HboneStream, rounds: int = 3, size: int = 100_000) -> None:
    """Echo round trips without relying on half-close (nghttpx cannot do it)."""
    async with asyncio.timeout(STEP):
        for _ in range(rounds):
            msg = os.urandom(size)
            stream.write(msg)
            await stream.drain()
            assert await read_exactly(stream, size) == msg


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def big_banner() -> Iterator[tuple[peers.TcpTarget, bytes]]:
    """Loopback server that sends 1 MB and closes first (data in flight at the close)."""
    blob = os.urandom(1_000_000)
    with peers.start_tcp_target(peers.banner_handler(blob)) as target:
        yield target, blob


# ------------------------------------------------------------------------ foreign side


async def go_once(
    gopeer: Path,
    server: str,
    authority: str,
    party: Party,
    data: bytes = b"",
    *,
    expect: SpiffeId = SERVER,
    headers: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """One-shot Go client (stdin = ``data`` then EOF), off the event loop."""
    return await asyncio.to_thread(
        peers.run_go_client,
        gopeer,
        server,
        authority,
        party.chain,
        party.key,
        party.roots,
        expect.uri,
        data,
        forwarded=FORWARDED,
        headers=headers,
        timeout=STEP,
    )


def go_server(gopeer: Path, party: Party) -> peers.Peer:
    return peers.start_go_server(gopeer, party.chain, party.key, party.roots)


async def tcp_echo_half_close(addr: str, size: int) -> None:
    """Through a local TCP entry point: send, FIN, expect the same bytes back, then EOF."""
    host, _, port = addr.rpartition(":")
    data = os.urandom(size)
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:

            async def send() -> None:
                writer.write(data)
                await writer.drain()
                writer.write_eof()

            got, _ = await asyncio.gather(reader.read(), send())
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    assert len(got) == size
    assert got == data


async def run_curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    argv = [curl, "-sS", "--max-time", "10", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, timeout=STEP, check=False
    )


# =================================================== 1. Go client -> our server


async def test_go_client_echo_through_our_server(
    gopeer: Path, mesh: Mesh, ours: OurServer, echo: peers.TcpTarget
) -> None:
    data = os.urandom(ONE_SHOT_UPLOAD)
    r = await go_once(
        gopeer,
        ours.addr,
        echo.addr,
        mesh.client,
        data,
        headers=[
            "baggage: k=v",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ],
    )
    assert r.returncode == peers.EXIT_OK, r.stderr
    assert r.stdout == data
    [stream] = ours.streams
    assert stream.peer.identity == CLIENT  # our server verified the Go client's SPIFFE id
    request = stream.request
    assert str(request.authority) == echo.addr
    assert request.forwarded_for == SocketAddress.parse(FORWARDED_FOR)
    assert request.baggage == "k=v"
    assert request.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert request.extra_headers == ()  # Go sent nothing we failed to parse


async def test_go_client_half_close_reaches_target(
    gopeer: Path, mesh: Mesh, ours: OurServer, after_eof: Upstream
) -> None:
    # Go stdin EOF -> END_STREAM -> our relay -> FIN at the target -> it answers -> Go.
    r = await go_once(
        gopeer, ours.addr, f"127.0.0.1:{after_eof.port}", mesh.client, b"z" * ONE_SHOT_UPLOAD
    )
    assert r.returncode == peers.EXIT_OK, r.stderr
    assert r.stdout == f"got {ONE_SHOT_UPLOAD} bytes then EOF".encode()


async def test_go_client_target_closes_first(
    gopeer: Path, mesh: Mesh, ours: OurServer, banner: peers.TcpTarget
) -> None:
    listener = peers.start_go_client(
        gopeer,
        ours.addr,
        banner.addr,
        mesh.client.chain,
        mesh.client.key,
        mesh.client.roots,
        SERVER.uri,
    )
    with listener:
        host, _, port = listener.addr.rpartition(":")
        async with asyncio.timeout(STEP):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                assert await reader.read() == peers.BANNER  # EOF while our side is open
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        line = await asyncio.to_thread(listener.wait_log, r"STREAM .*status=200")
        assert "reset=" not in listener.stderr.text(), line


async def test_go_client_streams_share_one_connection(
    gopeer: Path, mesh: Mesh, ours: OurServer, echo: peers.TcpTarget
) -> None:
    with peers.start_go_client(
        gopeer,
        ours.addr,
        echo.addr,
        mesh.client.chain,
        mesh.client.key,
        mesh.client.roots,
        SERVER.uri,
        forwarded=FORWARDED,
    ) as listener:
        await tcp_echo_half_close(listener.addr, 10)  # warm: the HTTP/2 connection exists
        sizes = [1, 500_000, 1, 2_000_000, 1, 100_000, 1, 1_000_000]
        await asyncio.gather(*(tcp_echo_half_close(listener.addr, n) for n in sizes))
        assert ours.connection_count == 1
        assert len(ours.streams) == 1 + len(sizes)
        assert {s.peer.address for s in ours.streams} == {ours.streams[0].peer.address}
        assert {s.peer.identity for s in ours.streams} == {CLIENT}
        assert {s.request.forwarded_for for s in ours.streams} == {
            SocketAddress.parse(FORWARDED_FOR)
        }


@pytest.mark.parametrize("status", [400, 401, 503])
async def test_go_client_sees_our_statuses(
    gopeer: Path, mesh: Mesh, ours: OurServer, echo: peers.TcpTarget, status: int
) -> None:
    target = {400: "10.255.255.1:80", 401: echo.addr, 503: closed_port()}[status]
    if status == 401:
        ours.deny_ports.add(SocketAddress.parse(echo.addr).port)
    r = await go_once(gopeer, ours.addr, target, mesh.client, b"x")
    assert r.returncode == peers.EXIT_STATUS, r.stderr
    assert f"status={status}" in r.stderr.decode()
    assert r.stdout == b""


@pytest.mark.parametrize("case", list(BAD_CLIENTS))
async def test_our_server_refuses_bad_go_client(
    gopeer: Path,
    mesh: Mesh,
    ours: OurServer,
    echo: peers.TcpTarget,
    case: str,
) -> None:
    """One clear refusal line per refused connection, nothing else logged, no CONNECT served.

    Go's transport sometimes redials once (the request body was not read yet), so the
    Go client may make two connections: each gets exactly one line.
    """
    make, reason = BAD_CLIENTS[case]
    bad = mesh.party(f"bad-client-{case}", make)
    with LogWatcher("HBONE") as everything, LogWatcher("refused connection") as refusals:
        r = await go_once(gopeer, ours.addr, echo.addr, bad, b"secret")
        await refusals.first()
    assert r.stdout == b""
    # The refusal is seen by Go only after its own TLS 1.3 handshake completed.
    # Chain failures: nothing follows the handshake, gopeer says "server rejected" (3).
    # SPIFFE failures: our server's session tickets arrived first, so gopeer cannot
    # tell a refusal from a broken connection (1); see test_our_server_sends_no_session_tickets.
    if "certificate verify failed" in reason:
        assert r.returncode == peers.EXIT_TLS, r.stderr
        assert b"server rejected the connection after the handshake" in r.stderr
    else:
        assert r.returncode not in (peers.EXIT_OK, peers.EXIT_STATUS), r.stderr
    ports = []
    for line in refusals.lines:
        m = re.fullmatch(r"HBONE: refused connection from 127\.0\.0\.1:(\d+): (.*)", line)
        assert m is not None, line
        assert reason in m.group(2), line
        ports.append(m.group(1))
    assert len(ports) == len(set(ports)), refusals.lines  # one line per connection
    assert everything.lines == refusals.lines  # and no other noise
    assert ours.streams == []  # no CONNECT was ever handled


async def test_our_server_refuses_plaintext_curl(ours: OurServer, refusals: LogWatcher) -> None:
    r = await run_curl(f"http://{ours.addr}/")
    assert r.returncode != 0
    assert b"HTTP/" not in r.stdout
    line = await refusals.first()
    assert len(refusals.lines) == 1, refusals.lines
    assert "plaintext HTTP is not HBONE (TLS required)" in line, line


async def test_our_server_refuses_http11_over_tls_curl(
    mesh: Mesh, ours: OurServer, refusals: LogWatcher
) -> None:
    c = mesh.client
    r = await run_curl(
        "--http1.1", "-k", "--cert", str(c.chain), "--key", str(c.key), f"https://{ours.addr}/"
    )
    assert r.returncode != 0
    assert b"HTTP/" not in r.stdout
    line = await refusals.first()
    assert len(refusals.lines) == 1, refusals.lines
    assert "did not negotiate ALPN h2 (got none)" in line, line


# =================================================== 2. our client -> Go server


async def test_our_client_echo_to_go_server(
    gopeer: Path, mesh: Mesh, pool: ConnectionPool, echo: peers.TcpTarget
) -> None:
    with go_server(gopeer, mesh.server) as go:
        stream = await open_stream(pool, go.addr, echo.addr, mesh.client.cert)
        assert stream.peer.identity == SERVER  # we verified the Go server's SPIFFE id
        await stream_echo_half_close(stream, 10)  # warm-up, see SETTINGS_BUG
        stream = await open_stream(pool, go.addr, echo.addr, mesh.client.cert)
        await stream_echo_half_close(stream, 1_000_000)
        # The Go server verified ours, and got our metadata.
        m = await asyncio.to_thread(
            go.wait_log,
            rf"CONNECT authority={re.escape(echo.addr)} peer=(\S+) forwarded=(.*) status=200",
        )
        assert m.group(1) == CLIENT.uri
        assert m.group(2).startswith('"for=\\"127.0.0.1:40000\\""'), m.string
        assert '"Baggage":["k=v"]' in m.string
        await asyncio.to_thread(
            go.wait_log,
            rf'ACCEPT remote=\S+ peer={re.escape(CLIENT.uri)} sni="" alpn_offered="h2" alpn=h2',
        )


async def test_our_client_streams_share_one_go_connection(
    gopeer: Path, mesh: Mesh, pool: ConnectionPool, echo: peers.TcpTarget
) -> None:
    with go_server(gopeer, mesh.server) as go:
        first = await open_stream(pool, go.addr, echo.addr, mesh.client.cert)
        await stream_echo_half_close(first, 10)
        streams = await asyncio.gather(
            *(open_stream(pool, go.addr, echo.addr, mesh.client.cert) for _ in range(6))
        )
        await asyncio.gather(
            *(
                stream_echo_half_close(s, n)
                for s, n in zip(streams, [1, 2_000_000] * 3, strict=True)
            )
        )
        assert len(pool.connections()) == 1
        text = go.stderr.text()
        assert text.count("ACCEPT ") == 1, go.output()
        assert text.count("status=200") == 7, go.output()


async def test_our_client_half_close_to_go_server(
    gopeer: Path, mesh: Mesh, pool: ConnectionPool, after_eof: Upstream
) -> None:
    # our END_STREAM -> Go's CloseWrite -> the target answers only after that FIN.
    with go_server(gopeer, mesh.server) as go:
        stream = await open_stream(pool, go.addr, f"127.0.0.1:{after_eof.port}", mesh.client.cert)
        stream.write(b"q" * 300_000)
        await stream.drain()
        stream.write_eof()
        async with asyncio.timeout(STEP):
            assert await read_all(stream) == b"got 300000 bytes then EOF"


async def test_our_client_go_target_closes_first(
    gopeer: Path,
    mesh: Mesh,
    pool: ConnectionPool,
    big_banner: tuple[peers.TcpTarget, bytes],
    echo: peers.TcpTarget,
) -> None:
    # Go: DATA, END_STREAM, then RST_STREAM(NO_ERROR) as our side is still open.
    banner, blob = big_banner
    with go_server(gopeer, mesh.server) as go:
        # Warm up first: Go sends the banner at once, in frames our client rejects
        # until Go's SETTINGS ACK is in (test_our_client_honours_its_settings_before_the_ack).
        warm = await open_stream(pool, go.addr, echo.addr, mesh.client.cert)
        await stream_echo_half_close(warm, 10)
        stream = await open_stream(pool, go.addr, banner.addr, mesh.client.cert)
        async with asyncio.timeout(STEP):
            got = await read_all(stream)  # all data, then EOF, no StreamReset
        assert len(got) == len(blob)
        assert got == blob
        assert stream.at_eof
        # The connection survived the stream's end and carries the next one.
        again = await open_stream(pool, go.addr, echo.addr, mesh.client.cert)
        await stream_echo_half_close(again, 1000)
        assert len(pool.connections()) == 1


@pytest.mark.parametrize("status", [400, 503])
async def test_our_client_sees_go_statuses(
    gopeer: Path, mesh: Mesh, pool: ConnectionPool, status: int
) -> None:
    target = {400: "10.255.255.1:80", 503: closed_port()}[status]
    with go_server(gopeer, mesh.server) as go:
        with pytest.raises(StreamRefused) as refused:
            await open_stream(pool, go.addr, target, mesh.client.cert)
        assert refused.value.status == status
        assert f"HBONE CONNECT {target} via {SERVER}: {status}" in str(refused.value)
        await asyncio.to_thread(
            go.wait_log, rf"CONNECT authority={re.escape(target)} .*status={status}"
        )


@pytest.mark.parametrize("case", list(BAD_SERVERS))
async def test_our_client_refuses_bad_go_server(
    gopeer: Path, mesh: Mesh, pool: ConnectionPool, echo: peers.TcpTarget, case: str
) -> None:
    make, message = BAD_SERVERS[case]
    bad = mesh.party(f"bad-server-{case}", make)
    with go_server(gopeer, bad) as go:
        with pytest.raises(ConnectFailed) as failed:
            await open_stream(pool, go.addr, echo.addr, mesh.client.cert)
        assert str(failed.value).startswith("HBONE "), failed.value
        assert f"{go.addr}" in str(failed.value)
        assert message in str(failed.value)
        assert pool.connections() == []
    assert "CONNECT " not in go.stderr.text()  # not a byte of HTTP/2 reached it


# =================================================== 3. nghttpx (HBONE client) -> our server


def h1_ping_pong(proxy: str, target: str, headers: dict[str, str]) -> int:
    """HTTP/1.1 CONNECT through ``proxy``, then echo round trips (blocking)."""
    status, sock, rest = peers.h1_connect(proxy, target, headers, timeout=STEP)
    with sock:
        if status == 200:
            for size in (1, 100_000, 1_000_000):
                msg = os.urandom(size)
                sock.sendall(msg)
                assert peers.recv_exactly(sock, size, rest) == msg
                rest = b""
    return status


@pytest.fixture
def http_target() -> Iterator[peers.TcpTarget]:
    """A tiny HTTP/1.1 server: one response per connection, then close."""

    def handler(conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
        body = b"hello through HBONE\n"
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)
        conn.shutdown(socket.SHUT_WR)

    with peers.start_tcp_target(handler) as target:
        yield target


async def test_nghttpx_client_echo_through_our_server(
    mesh: Mesh, ours: OurServer, echo: peers.TcpTarget
) -> None:
    c = mesh.client
    with peers.start_nghttpx_hbone_client(ours.addr, c.chain, c.key) as ngx:
        headers = {"Forwarded": FORWARDED, "Baggage": "k=v"}
        statuses = await asyncio.gather(
            *(asyncio.to_thread(h1_ping_pong, ngx.addr, echo.addr, headers) for _ in range(3))
        )
        assert statuses == [200, 200, 200], ngx.output()
    assert len(ours.streams) == 3
    for stream in ours.streams:
        assert stream.peer.identity == CLIENT  # nghttpx presented the cert we gave it
        assert str(stream.request.authority) == echo.addr
        assert stream.request.forwarded_for == SocketAddress.parse(FORWARDED_FOR)
        assert stream.request.baggage == "k=v"
        assert ("via", "1.1 nghttpx") in stream.request.extra_headers
    assert len({s.peer.address for s in ours.streams}) == 1  # one HTTP/2 connection


async def test_curl_through_nghttpx_to_our_server(
    mesh: Mesh, ours: OurServer, http_target: peers.TcpTarget
) -> None:
    c = mesh.client
    with peers.start_nghttpx_hbone_client(ours.addr, c.chain, c.key) as ngx:
        r = await run_curl("-p", "-x", f"http://{ngx.addr}", f"http://{http_target.addr}/")
        assert r.returncode == 0, r.stderr.decode() + ngx.output()
        assert r.stdout == b"hello through HBONE\n"
    [stream] = ours.streams
    assert stream.peer.identity == CLIENT
    assert str(stream.request.authority) == http_target.addr


@pytest.mark.parametrize("status", [400, 401, 503])
async def test_nghttpx_client_relays_our_statuses(
    mesh: Mesh, ours: OurServer, echo: peers.TcpTarget, status: int
) -> None:
    target = {400: "10.255.255.1:80", 401: echo.addr, 503: closed_port()}[status]
    ours.deny_ports.add(SocketAddress.parse(echo.addr).port)
    c = mesh.client
    with peers.start_nghttpx_hbone_client(ours.addr, c.chain, c.key) as ngx:
        got = await asyncio.to_thread(h1_ping_pong, ngx.addr, target, {})
    assert got == status


async def test_our_server_refuses_nghttpx_with_unknown_ca(
    mesh: Mesh, ours: OurServer, echo: peers.TcpTarget
) -> None:
    bad = mesh.party("bad-client-unknown-ca", BAD_CLIENTS["unknown-ca"][0])
    with (
        LogWatcher("refused connection") as refusals,
        peers.start_nghttpx_hbone_client(ours.addr, bad.chain, bad.key) as ngx,
    ):
        status = await asyncio.to_thread(h1_ping_pong, ngx.addr, echo.addr, {})
        assert status == 502
        line = await refusals.first()
    assert "certificate verify failed" in line
    assert ours.streams == []


# =================================================== 4. our client -> nghttpx (HBONE server)


@pytest.fixture
def nghttpx_server(mesh: Mesh) -> Iterator[tuple[peers.Peer, peers.Peer]]:
    s = mesh.server
    with (
        peers.start_connect_proxy() as proxy,
        peers.start_nghttpx_hbone_server(s.chain, s.key, s.roots, proxy.addr) as ngx,
    ):
        yield ngx, proxy


async def test_our_client_echo_to_nghttpx_server(
    mesh: Mesh,
    pool: ConnectionPool,
    echo: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, proxy = nghttpx_server
    streams = await asyncio.gather(
        *(open_stream(pool, ngx.addr, echo.addr, mesh.client.cert) for _ in range(3))
    )
    try:
        assert all(s.peer.identity == SERVER for s in streams)
        await asyncio.gather(*(stream_ping_pong(s) for s in streams))
    finally:
        for s in streams:
            s.reset()  # no half-close through nghttpx
    assert len(pool.connections()) == 1
    m = await asyncio.to_thread(
        proxy.wait_log, rf"CONNECT authority={re.escape(echo.addr)} .*status=200"
    )
    assert "forwarded='for=\"127.0.0.1:40000\"'" in m.string
    assert "'via': '2 nghttpx'" in m.string


async def test_our_client_nghttpx_target_closes_first(
    mesh: Mesh,
    pool: ConnectionPool,
    big_banner: tuple[peers.TcpTarget, bytes],
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, _ = nghttpx_server
    banner, blob = big_banner
    stream = await open_stream(pool, ngx.addr, banner.addr, mesh.client.cert)
    async with asyncio.timeout(STEP):
        got = await read_all(stream)
    assert len(got) == len(blob)
    assert got == blob


@pytest.mark.parametrize("status", [400, 503])
async def test_our_client_sees_nghttpx_statuses(
    mesh: Mesh, pool: ConnectionPool, nghttpx_server: tuple[peers.Peer, peers.Peer], status: int
) -> None:
    ngx, _ = nghttpx_server
    target = {400: "10.255.255.1:80", 503: closed_port()}[status]
    with pytest.raises(StreamRefused) as refused:
        await open_stream(pool, ngx.addr, target, mesh.client.cert)
    assert refused.value.status == status


async def test_nghttpx_server_refuses_our_client_from_unknown_ca(
    mesh: Mesh,
    pool: ConnectionPool,
    echo: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, proxy = nghttpx_server
    bad = mesh.party("bad-client-unknown-ca", BAD_CLIENTS["unknown-ca"][0])
    with pytest.raises(HboneError):
        await open_stream(pool, ngx.addr, echo.addr, bad.cert)
    assert "CONNECT" not in proxy.stderr.text()
    assert pool.connections() == []


async def test_our_client_refuses_nghttpx_with_wrong_identity(
    mesh: Mesh,
    pool: ConnectionPool,
    echo: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, proxy = nghttpx_server
    with pytest.raises(
        ConnectFailed, match=f"server identity {SERVER} is not the expected {CLIENT}"
    ):
        await open_stream(pool, ngx.addr, echo.addr, mesh.client.cert, expected=CLIENT)
    assert "CONNECT" not in proxy.stderr.text()


# =================================================== bugs in our HBONE found here
# Regression tests: each reproduces deterministically what the foreign peers hit by
# chance (they were strict xfails until the fixes landed).


async def test_our_server_sends_no_session_tickets(mesh: Mesh, ours: OurServer) -> None:
    def has_ticket() -> bool:
        ctx = tls_context(ssl.PROTOCOL_TLS_CLIENT, mesh.client)
        host, _, port = ours.addr.rpartition(":")
        with (
            socket.create_connection((host, int(port)), timeout=STEP) as raw,
            ctx.wrap_socket(raw, server_hostname=None) as tls,
        ):
            assert tls.recv(9)  # our HTTP/2 SETTINGS; any ticket was sent before it
            assert tls.session is not None
            return bool(tls.session.has_ticket)

    assert not await asyncio.to_thread(has_ticket)


def read_frames(tls: ssl.SSLSocket) -> Iterator[Frame]:
    """HTTP/2 frames from a TLS socket (after any preface) until EOF or a reset."""
    buf = bytearray()
    while True:
        if len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(buf[:9])))
            if len(buf) >= 9 + length:
                frame.parse_body(memoryview(bytes(buf[9 : 9 + length])))
                del buf[: 9 + length]
                yield frame
                continue
        try:
            chunk = tls.recv(65536)
        except (ConnectionError, ssl.SSLError):
            return
        if not chunk:
            return
        buf.extend(chunk)


def tls_context(side: int, party: Party) -> ssl.SSLContext:
    """A plain ``ssl`` context speaking HBONE's TLS (1.3, ALPN h2, mutual auth)."""
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(party.chain, party.key)
    if side == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(party.roots)
    return ctx


class RawH2:
    """A bare HTTP/2-over-mTLS client (hyperframe + hpack) for frame orders the
    foreign peers produce only by chance. Blocking: use from a thread."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, addr: str, party: Party) -> None:
        ctx = tls_context(ssl.PROTOCOL_TLS_CLIENT, party)
        host, _, port = addr.rpartition(":")
        raw = socket.create_connection((host, int(port)), timeout=STEP)
        try:
            self.tls = ctx.wrap_socket(raw, server_hostname=None)
        except BaseException:
            raw.close()
            raise
        self._frames = read_frames(self.tls)

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tls.close()

    def send(self, data: bytes) -> None:
        self.tls.sendall(data)

    def next_frame(self) -> Frame | None:
        """The next frame from the server; None once it closed the connection."""
        return next(self._frames, None)


def connect_headers(target: str) -> bytes:
    block = hpack.Encoder().encode([(":method", "CONNECT"), (":authority", target)])
    return HeadersFrame(1, block, flags=["END_HEADERS"]).serialize()


def _upload_before_settings_ack(
    addr: str, target: str, party: Party, frame: int, total: int
) -> str:
    """What Go's transport does when its body writer wins the race against its own
    SETTINGS ACK: it has received and applied our SETTINGS (max frame 1 MiB, stream
    window 4 MiB) and sends HEADERS + DATA before the ACK.
    Returns ``echoed N`` or ``GOAWAY <code>``."""
    with RawH2(addr, party) as h2c:
        window = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 24})
        h2c.send(RawH2.PREFACE + window.serialize())
        advertised: dict[int, int] = {}  # our server may send its SETTINGS in several frames
        while (
            advertised.get(SettingsFrame.MAX_FRAME_SIZE, 0) < frame
            or advertised.get(SettingsFrame.INITIAL_WINDOW_SIZE, 0) < total
        ):
            f = h2c.next_frame()
            assert f is not None, f"server closed before advertising {frame=} {total=}"
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                advertised.update(f.settings)
        out = connect_headers(target)
        for i in range(0, total, frame):
            out += DataFrame(1, b"x" * min(frame, total - i)).serialize()
        out += SettingsFrame(0, flags=["ACK"]).serialize()
        out += WindowUpdateFrame(0, window_increment=1 << 24).serialize()
        h2c.send(out)
        echoed = 0
        while (f := h2c.next_frame()) is not None:
            if isinstance(f, GoAwayFrame):
                return f"GOAWAY {f.error_code}"
            if isinstance(f, DataFrame) and f.stream_id == 1:
                echoed += len(f.data)
                if echoed >= total:
                    break
        return f"echoed {echoed}"


@pytest.mark.parametrize(
    ("frame", "total"), [(32_768, 32_768), (16_384, 200_000)], ids=["frame-size", "stream-window"]
)
async def test_our_server_honours_its_settings_before_the_ack(
    mesh: Mesh, ours: OurServer, echo: peers.TcpTarget, frame: int, total: int
) -> None:
    outcome = await asyncio.to_thread(
        _upload_before_settings_ack, ours.addr, echo.addr, mesh.client, frame, total
    )
    assert outcome == f"echoed {total}"


async def test_respond_after_connection_failure_raises_no_h2_error(mesh: Mesh) -> None:
    """A handler still deciding when its connection dies (the Go race above does this)."""
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    started = threading.Event()

    async def handler(stream: HboneStream) -> None:
        started.set()
        # Raises once the connection is torn down: the handler of a CONNECT not answered
        # yet is cancelled then (hbone.server); it may still try to answer, as
        # HboneServer itself does (503) on the way out.
        with contextlib.suppress(StreamReset, asyncio.CancelledError):
            await stream.read()
        try:
            stream.respond(Status.OK)
        except BaseException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    server = HboneServer(lambda: mesh.server.cert, handler)
    host, port = await server.start("127.0.0.1", 0)
    try:

        def client() -> None:
            with RawH2(f"{host}:{port}", mesh.client) as h2c:
                bad_ping = b"\x00\x00\x07\x06\x00\x00\x00\x00\x00" + b"1234567"  # 7 bytes, not 8
                h2c.send(
                    RawH2.PREFACE + SettingsFrame(0).serialize() + connect_headers("127.0.0.1:9")
                )
                assert started.wait(STEP)  # the handler is running, not yet answered
                h2c.send(bad_ping)
                while (f := h2c.next_frame()) is not None:
                    if isinstance(f, GoAwayFrame):
                        return

        await asyncio.to_thread(client)
        async with asyncio.timeout(STEP):
            raised = await outcome
    finally:
        await server.close()
    assert raised is None or isinstance(raised, HboneError), repr(raised)


def _raw_server(
    listener: socket.socket, party: Party, reply: Callable[[int], bytes], done: threading.Event
) -> None:
    """Accept one HBONE connection, wait for the CONNECT, send ``reply(stream_id)`` in
    one write (SETTINGS first), keep the connection until ``done``."""
    raw, _ = listener.accept()
    with tls_context(ssl.PROTOCOL_TLS_SERVER, party).wrap_socket(raw, server_side=True) as tls:
        tls.settimeout(STEP)
        preface = b""
        while len(preface) < len(RawH2.PREFACE):
            preface += tls.recv(len(RawH2.PREFACE) - len(preface))
        f = next((f for f in read_frames(tls) if isinstance(f, HeadersFrame)), None)
        assert f is not None, "client closed before its CONNECT"
        tls.sendall(SettingsFrame(0).serialize() + reply(f.stream_id))
        done.wait(STEP)


@contextlib.asynccontextmanager
async def raw_server(party: Party, reply: Callable[[int], bytes]) -> AsyncIterator[str]:
    """A scripted HBONE server on a thread; yields its address."""
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(STEP)
        server = asyncio.ensure_future(asyncio.to_thread(_raw_server, listener, party, reply, done))
        try:
            yield "{}:{}".format(*listener.getsockname())
        finally:
            done.set()
            with contextlib.suppress(OSError):  # e.g. accept() timed out: the test failed
                await server


def ok_headers(stream_id: int) -> bytes:
    block = hpack.Encoder().encode([(":status", "200")])
    return HeadersFrame(stream_id, block, flags=["END_HEADERS"]).serialize()


async def test_our_client_honours_its_settings_before_the_ack(
    mesh: Mesh, pool: ConnectionPool
) -> None:
    """Go's server did this to our client: a big DATA frame before its SETTINGS ACK."""
    blob = os.urandom(32_768)

    def reply(sid: int) -> bytes:
        return (
            ok_headers(sid)
            + DataFrame(sid, blob, flags=["END_STREAM"]).serialize()
            + SettingsFrame(0, flags=["ACK"]).serialize()
        )

    async with raw_server(mesh.server, reply) as addr:
        try:
            stream = await open_stream(pool, addr, "127.0.0.1:9", mesh.client.cert)
            async with asyncio.timeout(STEP):
                got = await read_all(stream)
        except HboneError as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
    assert got == blob


@pytest.mark.parametrize("code", [0, 8], ids=["NO_ERROR", "CANCEL"])
async def test_our_client_sees_reset_sent_with_end_stream(
    mesh: Mesh, pool: ConnectionPool, code: int
) -> None:
    def reply(sid: int) -> bytes:  # as Go's and nghttpx's servers do when the target closed
        return (
            ok_headers(sid)
            + DataFrame(sid, b"hello", flags=["END_STREAM"]).serialize()
            + RstStreamFrame(sid, error_code=code).serialize()
        )

    async with raw_server(mesh.server, reply) as addr:
        stream = await open_stream(pool, addr, "127.0.0.1:9", mesh.client.cert)
        async with asyncio.timeout(STEP):
            assert await stream.read() == b"hello"
            if code == 0:  # a clean end: EOF, and the peer reads no more of ours
                assert await stream.read() == b""
            else:  # an abort, reported as such after the data
                try:
                    end: bytes | StreamReset = await stream.read()
                except StreamReset as exc:
                    end = exc
                assert isinstance(end, StreamReset), end
        [(_, conn)] = pool.connections()
        assert stream.closed
        assert stream.stream_id not in conn.streams
