"""Self-checks of the foreign HBONE peers (Go net/http, nghttpx) against each other.

These prove the peers work on their own, so that a later interop failure against
our Python HBONE is attributable to us.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import peers
from .make_test_certs import CLIENT_ID, SERVER_ID, Identity, InteropPKI

pytestmark = pytest.mark.interop

FORWARDED = 'for="127.0.0.1:40000"'


def go_server(
    gopeer: Path, pki: InteropPKI, ident: Identity | None = None, **kw: Any
) -> peers.Peer:
    ident = ident or pki.server
    return peers.start_go_server(gopeer, ident.chain, ident.key, pki.roots, **kw)


def go_once(
    gopeer: Path,
    pki: InteropPKI,
    server: str,
    authority: str,
    data: bytes = b"",
    ident: Identity | None = None,
    expect_san: str = SERVER_ID,
) -> tuple[int, bytes, str]:
    ident = ident or pki.client
    r = peers.run_go_client(
        gopeer,
        server,
        authority,
        ident.chain,
        ident.key,
        pki.roots,
        expect_san,
        data,
        forwarded=FORWARDED,
    )
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def go_listener(gopeer: Path, pki: InteropPKI, server: str, authority: str) -> peers.Peer:
    return peers.start_go_client(
        gopeer,
        server,
        authority,
        pki.client.chain,
        pki.client.key,
        pki.roots,
        SERVER_ID,
        forwarded=FORWARDED,
    )


def connect_tcp(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def echo_with_half_close(sock: socket.socket, size: int, already: bytes = b"") -> None:
    """Send ``size`` bytes, half-close, and expect exactly them back, then EOF."""
    data = os.urandom(size)

    def send() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        got = peers.recv_until_eof(sock, already)
    finally:
        sender.join(10)
    assert len(got) == len(data)
    assert got == data


def ping_pong(
    sock: socket.socket, already: bytes = b"", rounds: int = 3, size: int = 100_000
) -> None:
    """Echo round trips without relying on half-close."""
    for _ in range(rounds):
        msg = os.urandom(size)
        sock.sendall(msg)
        assert peers.recv_exactly(sock, size, already) == msg
        already = b""


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# ------------------------------------------------------------------ Go <-> Go


def test_go_oneshot_echo_with_half_close(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget
) -> None:
    data = os.urandom(1_000_000)
    with go_server(gopeer, interop_pki) as server:
        rc, out, err = go_once(gopeer, interop_pki, server.addr, echo.addr, data)
        assert rc == 0, err + server.output()
        assert out == data  # the client's EOF reached the target, the target's EOF came back
        line = server.wait_log(
            r"CONNECT authority=(\S+) peer=(\S+) forwarded=(.*) status=200"
        ).string
        assert f"authority={echo.addr} peer={CLIENT_ID}" in line
        assert 'forwarded="for=\\"127.0.0.1:40000\\""' in line
        server.wait_log(rf"ACCEPT remote=\S+ peer={CLIENT_ID} sni=\"\" alpn_offered=\"h2\" alpn=h2")


def test_go_listener_multiplexes_streams_on_one_connection(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget
) -> None:
    with (
        go_server(gopeer, interop_pki) as server,
        go_listener(gopeer, interop_pki, server.addr, echo.addr) as client,
    ):
        with connect_tcp(client.addr) as s:  # warm: establishes the HTTP/2 connection
            echo_with_half_close(s, 10)
        errors: list[BaseException] = []

        def one(size: int) -> None:
            try:
                with connect_tcp(client.addr) as s:
                    echo_with_half_close(s, size)
            except BaseException as e:
                errors.append(e)

        threads = [
            threading.Thread(target=one, args=(2_000_000 if i % 2 else 1,)) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        remotes = {
            server.wait_log(r"CONNECT .* status=200 remote=(\S+)", start=i).group(1)
            for i in range(server.log_mark())
            if "CONNECT" in server.stderr.lines[i]
        }
        assert len(remotes) == 1, server.output()  # 9 streams, one TLS connection
        assert server.stderr.text().count("status=200") == 9


def test_go_server_closes_first(
    gopeer: Path, interop_pki: InteropPKI, banner: peers.TcpTarget
) -> None:
    with (
        go_server(gopeer, interop_pki) as server,
        go_listener(gopeer, interop_pki, server.addr, banner.addr) as client,
        connect_tcp(client.addr) as s,
    ):
        assert peers.recv_until_eof(s) == peers.BANNER  # EOF while our side is still open


@pytest.mark.parametrize(
    ("authority", "status", "detail"),
    [
        ("10.255.255.1:80", 400, "target not allowed"),
        ("example.com:80", 400, "authority is not ip:port"),
        (None, 503, "connection refused"),
    ],
)
def test_go_statuses(
    gopeer: Path, interop_pki: InteropPKI, authority: str | None, status: int, detail: str
) -> None:
    authority = authority or closed_port()
    with go_server(gopeer, interop_pki) as server:
        rc, _, err = go_once(gopeer, interop_pki, server.addr, authority, b"x")
        assert rc == peers.EXIT_STATUS
        assert f"status={status}" in err
        server.wait_log(rf"CONNECT authority={authority} .*status={status} .*{detail}")


def test_go_client_rejects_wrong_server_identity(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget
) -> None:
    with go_server(gopeer, interop_pki) as server:
        rc, _, err = go_once(
            gopeer, interop_pki, server.addr, echo.addr, b"x", expect_san=CLIENT_ID
        )
        assert rc == peers.EXIT_TLS
        assert f'server identity "{SERVER_ID}" != expected "{CLIENT_ID}"' in err


def test_go_client_rejects_server_from_unknown_ca(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget
) -> None:
    with go_server(gopeer, interop_pki, interop_pki.foreign) as server:
        rc, _, err = go_once(
            gopeer, interop_pki, server.addr, echo.addr, b"x", expect_san=CLIENT_ID
        )
        assert rc == peers.EXIT_TLS
        assert "certificate signed by unknown authority" in err


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("foreign", "certificate signed by unknown authority"),
        ("other_td", 'client trust domain \\\\"other.domain\\\\" != \\\\"cluster.local\\\\"'),
        ("nospiffe", "certificate has no spiffe:// URI SAN"),
    ],
)
def test_go_server_rejects_client(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget, who: str, reason: str
) -> None:
    with go_server(gopeer, interop_pki) as server:
        rc, out, err = go_once(
            gopeer, interop_pki, server.addr, echo.addr, b"x", ident=getattr(interop_pki, who)
        )
        assert rc == peers.EXIT_TLS, err
        assert out == b""
        server.wait_log(r"HANDSHAKE-REJECT .*reason=.*" + reason)
        assert "CONNECT" not in server.stderr.text()


def _tls_client(pki: InteropPKI, alpn: list[str] | None, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if with_cert:
        ctx.load_cert_chain(pki.client.chain, pki.client.key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _refused_after_request(ctx: ssl.SSLContext | None, addr: str) -> bytes:
    """Try an HTTP/1.1 request; return whatever came back (must not be HTTP)."""
    with connect_tcp(addr) as raw:
        try:
            conn = ctx.wrap_socket(raw) if ctx else raw
            with conn if ctx else contextlib.nullcontext(raw):
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                return peers.recv_until_eof(conn)
        except (ssl.SSLError, ConnectionError) as e:
            return repr(e).encode()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("plaintext", "first record does not look like a TLS handshake"),
        ("http1.1-alpn", 'ALPN: peer did not negotiate h2 \\(got \\\\"\\\\"\\)'),
        ("no-alpn", 'ALPN: peer did not negotiate h2 \\(got \\\\"\\\\"\\)'),
        ("no-client-cert", "client didn't provide a certificate"),
    ],
)
def test_go_server_refuses_non_hbone_clients(
    gopeer: Path, interop_pki: InteropPKI, case: str, reason: str
) -> None:
    ctx = {
        "plaintext": None,
        "http1.1-alpn": _tls_client(interop_pki, ["http/1.1"]),
        "no-alpn": _tls_client(interop_pki, None),
        "no-client-cert": _tls_client(interop_pki, ["h2"], with_cert=False),
    }[case]
    with go_server(gopeer, interop_pki) as server:
        reply = _refused_after_request(ctx, server.addr)
        assert b"HTTP/" not in reply
        server.wait_log(r"HANDSHAKE-REJECT .*reason=.*" + reason)


def test_go_bench_smoke(gopeer: Path, interop_pki: InteropPKI) -> None:
    creds = (interop_pki.server.chain, interop_pki.server.key, interop_pki.roots)
    setup = peers.run_go_bench(
        gopeer, *creds, "--mode", "setup", "--streams-total", "50", "--concurrency", "4"
    )
    assert setup["streams_total"] == 50
    assert setup["streams_per_s"] > 0
    tput = peers.run_go_bench(
        gopeer, *creds, "--mode", "throughput", "--streams", "2", "--seconds", "0.3"
    )
    assert tput["mb_per_s"] > 0
    assert tput["bytes"] > 0


# ------------------------------------------------- nghttpx as HBONE client -> Go server


def test_nghttpx_client_to_go_server(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget
) -> None:
    p = interop_pki
    with (
        go_server(gopeer, p) as server,
        peers.start_nghttpx_hbone_client(server.addr, p.client.chain, p.client.key) as ngx,
    ):
        status, sock, rest = peers.h1_connect(
            ngx.addr, echo.addr, {"Forwarded": FORWARDED, "Baggage": "k=v"}
        )
        with sock:
            assert status == 200
            ping_pong(sock, rest)
        line = server.wait_log(r"CONNECT .*status=200").string
        assert f"authority={echo.addr} peer={CLIENT_ID}" in line
        assert '"Forwarded":["for=\\"127.0.0.1:40000\\""]' in line
        assert '"Via":["1.1 nghttpx"]' in line
        assert '"Baggage":["k=v"]' in line
        server.wait_log(
            rf"ACCEPT remote=\S+ peer={CLIENT_ID} sni=\"\" alpn_offered=\"h2,h2-16,h2-14\" alpn=h2"
        )


def test_nghttpx_client_server_closes_first(
    gopeer: Path, interop_pki: InteropPKI, banner: peers.TcpTarget
) -> None:
    p = interop_pki
    with (
        go_server(gopeer, p) as server,
        peers.start_nghttpx_hbone_client(server.addr, p.client.chain, p.client.key) as ngx,
    ):
        status, sock, rest = peers.h1_connect(ngx.addr, banner.addr)
        with sock:
            assert status == 200
            assert peers.recv_until_eof(sock, rest) == peers.BANNER


def test_nghttpx_client_relays_statuses(gopeer: Path, interop_pki: InteropPKI) -> None:
    p = interop_pki
    with (
        go_server(gopeer, p) as server,
        peers.start_nghttpx_hbone_client(server.addr, p.client.chain, p.client.key) as ngx,
    ):
        for target, want in (("10.255.255.1:80", 400), (closed_port(), 503)):
            status, sock, _ = peers.h1_connect(ngx.addr, target)
            sock.close()
            assert status == want
            server.wait_log(rf"CONNECT authority={target} .*status={want}")


def test_nghttpx_client_refused_by_go_server(
    gopeer: Path, interop_pki: InteropPKI, echo: peers.TcpTarget
) -> None:
    p = interop_pki
    with (
        go_server(gopeer, p) as server,
        peers.start_nghttpx_hbone_client(server.addr, p.foreign.chain, p.foreign.key) as ngx,
    ):
        status, sock, _ = peers.h1_connect(ngx.addr, echo.addr)
        sock.close()
        assert status == 502
        server.wait_log("HANDSHAKE-REJECT .*certificate signed by unknown authority")


# ------------------------------------------------- Go client -> nghttpx as HBONE server


@pytest.fixture
def nghttpx_server(interop_pki: InteropPKI) -> Iterator[tuple[peers.Peer, peers.Peer]]:
    p = interop_pki
    with (
        peers.start_connect_proxy() as proxy,
        peers.start_nghttpx_hbone_server(p.server.chain, p.server.key, p.roots, proxy.addr) as ngx,
    ):
        yield ngx, proxy


def test_go_client_to_nghttpx_server(
    gopeer: Path,
    interop_pki: InteropPKI,
    echo: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, proxy = nghttpx_server
    with go_listener(gopeer, interop_pki, ngx.addr, echo.addr) as client:
        errors: list[BaseException] = []

        def one() -> None:
            try:
                with connect_tcp(client.addr) as s:
                    ping_pong(s)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
    line = proxy.wait_log(rf"CONNECT authority={echo.addr} .*status=200").string
    assert "forwarded='for=\"127.0.0.1:40000\"'" in line
    assert "'via': '2 nghttpx'" in line


def test_go_client_oneshot_nghttpx_server_closes_first(
    gopeer: Path,
    interop_pki: InteropPKI,
    banner: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, _ = nghttpx_server
    rc, out, err = go_once(gopeer, interop_pki, ngx.addr, banner.addr)
    assert rc == 0, err
    assert out == peers.BANNER


def test_go_client_nghttpx_server_statuses(
    gopeer: Path, interop_pki: InteropPKI, nghttpx_server: tuple[peers.Peer, peers.Peer]
) -> None:
    ngx, _ = nghttpx_server
    for target, want in (("10.255.255.1:80", 400), (closed_port(), 503)):
        rc, _, err = go_once(gopeer, interop_pki, ngx.addr, target, b"x")
        assert rc == peers.EXIT_STATUS
        assert f"status={want}" in err


def test_go_client_rejects_nghttpx_wrong_identity(
    gopeer: Path,
    interop_pki: InteropPKI,
    echo: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, proxy = nghttpx_server
    rc, _, err = go_once(gopeer, interop_pki, ngx.addr, echo.addr, b"x", expect_san=CLIENT_ID)
    assert rc == peers.EXIT_TLS
    assert "server identity" in err
    assert "CONNECT" not in proxy.stderr.text()


def test_nghttpx_server_rejects_unknown_ca_client(
    gopeer: Path,
    interop_pki: InteropPKI,
    echo: peers.TcpTarget,
    nghttpx_server: tuple[peers.Peer, peers.Peer],
) -> None:
    ngx, proxy = nghttpx_server
    rc, _, err = go_once(gopeer, interop_pki, ngx.addr, echo.addr, b"x", ident=interop_pki.foreign)
    assert rc == peers.EXIT_TLS, err
    assert "CONNECT" not in proxy.stderr.text()


def test_nghttpx_server_refuses_http11_client(
    interop_pki: InteropPKI, nghttpx_server: tuple[peers.Peer, peers.Peer]
) -> None:
    ngx, _ = nghttpx_server
    reply = _refused_after_request(_tls_client(interop_pki, ["http/1.1"]), ngx.addr)
    assert b"HTTP/" not in reply
