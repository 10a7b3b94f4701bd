"""HBONE benchmark: our client -> our server, with the Go (net/http) pair measured in the same run.

    .venv/bin/python bench/hbone.py [--seconds 5] [--setup-streams 5000] [--idle-streams 2000]
        [--src OTHER_TREE/src]

Figures (loopback, real TLS 1.3 + HTTP/2, both sides on this machine):

- bulk throughput, 1 and 8 concurrent streams, client -> server -> TCP sink (MB/s);
- stream setup on a warm connection: CONNECT, 200, one byte echoed, close (streams/s);
- memory per idle open stream (client and server side together, tracemalloc);
- a cross pair, Go client -> our server, for the record;
- CPU of our server and client processes (``/proc``) per stream of setup and per MB of bulk.

``--src``: the ``ambient`` package to measure (default: this tree's); for a same-run
A/B, export the other tree with ``git archive`` and alternate runs with and without it.

Our server runs in its own process (as the Go server runs on its own goroutines),
our client in this one, both on uvloop. Ratios are ours / Go.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(sys.argv[sys.argv.index("--src") + 1]) if "--src" in sys.argv else ROOT / "src"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SRC))  # (before ROOT: the tree under test wins)

import uvloop  # noqa: E402

from ambient.hbone.messages import ConnectRequest, SocketAddress, Status  # noqa: E402
from ambient.hbone.pool import ConnectionPool  # noqa: E402
from ambient.hbone.server import HboneServer  # noqa: E402
from ambient.hbone.splice import connect_relay  # noqa: E402
from ambient.hbone.stream import HboneStream  # noqa: E402
from ambient.identity.ca import CertificateAuthority  # noqa: E402
from ambient.identity.certs import WorkloadCertificate  # noqa: E402
from ambient.identity.spiffe import SpiffeId  # noqa: E402

SERVER_ID = SpiffeId.workload("bench", "server")
CLIENT_ID = SpiffeId.workload("bench", "client")
CHUNK = 256 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- our server, in its own process ------------------------------------------------------


async def _serve(cert_dir: Path) -> None:
    ca = CertificateAuthority.load_or_create(cert_dir)
    cert = ca.issue(SERVER_ID)
    received = 0

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        while data := await reader.read(CHUNK):
            received += len(data)
        writer.close()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.close()

    sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)

    async def handler(stream: HboneStream) -> None:
        target = stream.request.authority
        tcp = await connect_relay(stream, str(target.ip), target.port)
        stream.respond(Status.OK)
        tcp.start()
        await tcp.done

    server = HboneServer(lambda: cert, handler)
    _, port = await server.start("127.0.0.1", 0)
    ports = (port, sink_server.sockets[0].getsockname()[1], echo_server.sockets[0].getsockname()[1])
    print("LISTENING", *ports, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    await server.close()


def start_server(cert_dir: Path) -> tuple[subprocess.Popen[str], int, int, int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(cert_dir), "--src", str(SRC)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "LISTENING":
        proc.kill()
        raise RuntimeError(f"benchmark server did not start: {line}")
    return proc, int(line[1]), int(line[2]), int(line[3])


# -- our client ----------------------------------------------------------------------


async def _open(
    pool: ConnectionPool, cert: WorkloadCertificate, port: int, target: int
) -> HboneStream:
    return await pool.open_stream(
        source=cert,
        destination=SocketAddress.parse(f"127.0.0.1:{port}"),
        expected=[SERVER_ID],
        request=ConnectRequest(SocketAddress.parse(f"127.0.0.1:{target}")),
    )


async def ours_throughput(
    cert: WorkloadCertificate, port: int, sink: int, streams: int, seconds: float
) -> dict[str, Any]:
    pool = ConnectionPool()
    warm = await _open(pool, cert, port, sink)
    warm.write_eof()
    await warm.read()
    chunk = b"\0" * CHUNK
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def one() -> None:
        nonlocal sent
        stream = await _open(pool, cert, port, sink)
        while time.perf_counter() < deadline:
            stream.write(chunk)
            sent += len(chunk)
            await stream.drain()
        stream.write_eof()
        while await stream.read():  # the server ends the stream once the sink has it all
            pass

    await asyncio.gather(*(one() for _ in range(streams)))
    elapsed = time.perf_counter() - start
    await pool.close()
    return {"mb_per_s": sent / 1e6 / elapsed, "bytes": sent, "seconds": elapsed, "streams": streams}


async def ours_setup(
    cert: WorkloadCertificate, port: int, echo: int, total: int, concurrency: int
) -> dict[str, Any]:
    pool = ConnectionPool()
    latencies: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        stream = await _open(pool, cert, port, echo)
        stream.write(b"x")
        stream.write_eof()
        got = b""
        while data := await stream.read():
            got += data
        assert got == b"x", got
        latencies.append(time.perf_counter() - t0)

    await one()  # warm connection
    latencies.clear()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await pool.close()
    latencies.sort()
    return {
        "streams_per_s": total / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[len(latencies) * 99 // 100] * 1000,
        "concurrency": concurrency,
    }


async def idle_stream_memory(ca: CertificateAuthority, count: int) -> dict[str, Any]:
    """Bytes held per open, idle stream: client and server objects together, one process."""
    server_cert, client_cert = ca.issue(SERVER_ID), ca.issue(CLIENT_ID)
    release = asyncio.Event()

    async def hold(stream: HboneStream) -> None:
        stream.respond(Status.OK)
        await release.wait()
        stream.reset()

    server = HboneServer(lambda: server_cert, hold)
    _, port = await server.start("127.0.0.1", 0)
    pool = ConnectionPool(max_streams=100)
    warm = [await _open(pool, client_cert, port, 9) for _ in range(5)]  # connections, contexts
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    streams = [await _open(pool, client_cert, port, 9) for _ in range(count)]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    connections = len(pool.connections())
    release.set()
    for stream in [*warm, *streams]:
        stream.reset()
    await pool.close()
    await server.close()
    return {
        "streams": count,
        "connections": connections,
        "bytes_per_stream": (after - before) / count,
    }


# -- the Go pair ---------------------------------------------------------------------


def go_bench(binary: Path, files: tuple[Path, Path, Path], *args: str) -> dict[str, Any]:
    cert, key, roots = files
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
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def write_files(directory: Path, cert: WorkloadCertificate) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "chain.pem", directory / "key.pem", directory / "roots.pem")
    for path, data in zip(
        paths, (cert.chain_pem, cert.private_key_pem, cert.roots_pem), strict=True
    ):
        path.write_bytes(data)
    os.chmod(paths[1], 0o600)
    return paths


def build_go() -> Path | None:
    try:
        from tests.interop.peers import build_gopeer

        return build_gopeer()
    except BaseException as exc:  # pytest.skip raises a BaseException subclass
        print(f"(Go baseline unavailable: {exc})", file=sys.stderr)
        return None


# -- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--setup-streams", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--idle-streams", type=int, default=2000)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help="the ambient package to measure (a src dir)")
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve(args.serve))
        return

    with tempfile.TemporaryDirectory(prefix="bench-hbone-") as tmp:
        cert_dir = Path(tmp) / "ca"
        ca = CertificateAuthority.load_or_create(cert_dir)
        client = ca.issue(CLIENT_ID)
        files = write_files(Path(tmp) / "client", client)
        gopeer = build_go()
        rows: list[tuple[str, float | None, float | None, str]] = []

        proc, port, sink, echo = start_server(cert_dir)
        try:
            ours: dict[str, dict[str, Any]] = {}
            cpu: dict[str, tuple[float, float]] = {}  # (server, client) CPU seconds per phase
            for key, phase in (
                ("1", lambda: ours_throughput(client, port, sink, 1, args.seconds)),
                ("8", lambda: ours_throughput(client, port, sink, 8, args.seconds)),
                ("setup", lambda: ours_setup(client, port, echo, args.setup_streams,
                                             args.concurrency)),
            ):  # fmt: skip
                before = cpu_seconds(proc.pid), cpu_seconds(os.getpid())
                ours[key] = uvloop.run(phase())
                cpu[key] = (cpu_seconds(proc.pid) - before[0], cpu_seconds(os.getpid()) - before[1])
            cross = None
            if gopeer:
                cross = go_bench(
                    gopeer,
                    files,
                    "--mode",
                    "throughput",
                    "--streams",
                    "1",
                    "--seconds",
                    str(args.seconds),
                    "--server",
                    f"127.0.0.1:{port}",
                    "--expect-san",
                    str(SERVER_ID),
                )
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
        go: dict[str, dict[str, Any]] = {}
        if gopeer:
            go["1"] = go_bench(
                gopeer,
                files,
                "--mode",
                "throughput",
                "--streams",
                "1",
                "--seconds",
                str(args.seconds),
            )
            go["8"] = go_bench(
                gopeer,
                files,
                "--mode",
                "throughput",
                "--streams",
                "8",
                "--seconds",
                str(args.seconds),
            )
            go["setup"] = go_bench(
                gopeer,
                files,
                "--mode",
                "setup",
                "--streams-total",
                str(args.setup_streams),
                "--concurrency",
                str(args.concurrency),
            )
        memory = uvloop.run(idle_stream_memory(ca, args.idle_streams))

    def ratio(a: float, b: float | None) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    for label, key, field in (
        ("throughput, 1 stream (MB/s)", "1", "mb_per_s"),
        ("throughput, 8 streams (MB/s)", "8", "mb_per_s"),
        (
            f"stream setup, warm pool, concurrency {args.concurrency} (streams/s)",
            "setup",
            "streams_per_s",
        ),
        ("stream setup p50 (ms)", "setup", "p50_ms"),
        ("stream setup p99 (ms)", "setup", "p99_ms"),
    ):
        value = ours[key][field]
        base = go[key][field] if go else None
        rows.append((label, value, base, ratio(value, base)))
    print(f"{'measure':<58} {'ours':>10} {'Go pair':>10} {'ours/Go':>8}")
    for label, value, base, r in rows:
        print(
            f"{label:<58} {value:>10.1f} {base if base is not None else float('nan'):>10.1f} {r:>8}"
        )
    if cross:
        print(f"{'cross: Go client -> our server, 1 stream (MB/s)':<58} {cross['mb_per_s']:>10.1f}")
    server_cpu, client_cpu = cpu["setup"]
    per_stream = 1e6 / (args.setup_streams + 1)
    print(
        f"{'setup: CPU per stream, server + client (µs)':<58} "
        f"{server_cpu * per_stream:>10.0f} + {client_cpu * per_stream:.0f}"
    )
    for key in ("1", "8"):
        server_cpu, client_cpu = cpu[key]
        per_mb = 1e6 / (ours[key]["bytes"] / 1e6)
        print(
            f"{f'{key} bulk stream(s): CPU per MB, server + client (µs)':<58} "
            f"{server_cpu * per_mb:>10.0f} + {client_cpu * per_mb:.0f}"
        )
    print(
        f"{'memory per idle open stream, client+server (bytes)':<58} {memory['bytes_per_stream']:>10.0f}"
        f"   ({memory['streams']} streams on {memory['connections']} connections; goal <= 16384)"
    )


if __name__ == "__main__":
    main()
