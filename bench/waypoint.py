"""Waypoint benchmark: 1 KiB HTTP requests through ztunnel -> waypoint -> ztunnel, against L4 only.

    .venv/bin/python bench/waypoint.py [--seconds 5] [--rate 1000] [--connections 16]
    .venv/bin/python bench/waypoint.py --protocol grpc   # unary gRPC, 1 KiB each way
    .venv/bin/python bench/waypoint.py --baseline /tmp/old --rounds 5   # old tree's waypoint vs ours

``--baseline DIR``: DIR is another tree (e.g. main exported with ``git archive``); its
waypoint (its own ``bench/waypoint.py --role waypoint``, so its own ``src``) and this
tree's are alternated round by round in one run, the other roles from this tree, and the
CPU per request of each printed with their ratio. ``BENCH_PROFILE=FILE`` writes a
cProfile of the waypoint, on the thread's CPU clock with ``BENCH_PROFILE_CLOCK=cpu``.

``--protocol grpc``: the server app is a grpcio server answering a 1 KiB
unary call with 1 KiB (service port declared ``grpc``, so the waypoint speaks
HTTP/2 upstream), and the load generator is grpcio (one channel, i.e. one
HTTP/2 connection, per ``--connections``); everything else is the same.

Processes (real sockets on loopback): the waypoint; the destination ztunnel
(node-2) with the server pod; the server app (HTTP/1.1 keep-alive, answers
a 1 KiB POST with 1 KiB); the source side; and the load generator (this
process). The source side stands in for the client's ztunnel: it accepts the
client's plain TCP and opens an HBONE CONNECT with the client pod's
certificate, to the waypoint for the service VIP (L7 path), or straight to
the server pod's ztunnel (L4 path) -- the same work in both paths, so the
difference is the waypoint hop. (Today's source ztunnel does not yet send
to waypoints; that wiring is another change.)

Figures for each path: p50/p99 latency of 1 KiB request/response at
``--rate`` over ``--connections`` keep-alive connections, the waypoint's CPU
(cores, and CPU time per request, which depends less on how busy the shared
machine is) and RSS at that rate, and the maximum request rate
(``--connections`` closed-loop connections, no pacing). The load average is
printed last: the other four processes share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import uvloop  # noqa: E402

from ambient.frozen import FrozenMap  # noqa: E402
from ambient.hbone.messages import ConnectRequest, SocketAddress  # noqa: E402
from ambient.hbone.pool import ConnectionPool  # noqa: E402
from ambient.hbone.splice import TcpRelay  # noqa: E402
from ambient.identity.ca import CertificateAuthority  # noqa: E402
from ambient.identity.manager import CertificateManager  # noqa: E402
from ambient.identity.spiffe import SpiffeId  # noqa: E402
from ambient.state.proxy import ProxyState  # noqa: E402
from ambient.state.workload import (  # noqa: E402
    AppProtocol,
    GatewayAddress,
    Port,
    Service,
    TunnelProtocol,
    Workload,
)
from ambient.waypoint.proxy import Waypoint  # noqa: E402
from ambient.ztunnel.proxy import Ztunnel  # noqa: E402

NET = "127.32"
CLIENT_IP, SERVER_IP, VIP = f"{NET}.0.1", f"{NET}.1.1", f"{NET}.2.1"
WAYPOINT_IP, NODE_IP = f"{NET}.3.1", f"{NET}.4.2"
ENTRY_L7, ENTRY_L4 = 7001, 7002
APP_PORT = 8080
PROTOCOL = AppProtocol.HTTP11  # AppProtocol.GRPC with --protocol grpc (see configure)
SERVICE = Service(
    name="server",
    namespace="bench",
    hostname="server.bench.svc.cluster.local",
    addresses=(ipaddress.IPv4Address(VIP),),
    ports=(Port(80, APP_PORT, PROTOCOL),),
    waypoint=GatewayAddress("bench/waypoint.bench.svc.cluster.local"),
)


def pod(name: str, address: str, node: str, services: bool = False) -> Workload:
    return Workload(
        uid=f"Kubernetes//Pod/bench/{name}",
        name=name,
        namespace="bench",
        addresses=(ipaddress.IPv4Address(address),),
        service_account=name,
        node=node,
        tunnel_protocol=TunnelProtocol.HBONE,
        workload_name=name,
        canonical_name=name,
        canonical_revision="v1",
        services=FrozenMap({SERVICE.key: SERVICE.ports}) if services else FrozenMap(),
    )


CLIENT, SERVER = pod("client", CLIENT_IP, "node-1"), pod("server", SERVER_IP, "node-2", True)


def configure(protocol: str) -> None:
    """``--protocol grpc``: the service port declares grpc (the waypoint speaks HTTP/2)."""
    global PROTOCOL, SERVICE, SERVER
    PROTOCOL = AppProtocol.GRPC if protocol == "grpc" else AppProtocol.HTTP11
    SERVICE = dataclasses.replace(SERVICE, ports=(Port(80, APP_PORT, PROTOCOL),))
    SERVER = pod("server", SERVER_IP, "node-2", True)


def state(node: str) -> ProxyState:
    s = ProxyState(node)
    s.apply([SERVICE, CLIENT, SERVER], [])
    return s


def signer(ca_dir: Path) -> object:
    ca = CertificateAuthority.load_or_create(ca_dir)

    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    return sign


async def wait_stdin() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- roles in child processes ---------------------------------------------------------


async def run_ztunnel(ca_dir: Path) -> None:
    ztunnel = Ztunnel("node-2", NODE_IP, state("node-2"), CertificateManager(signer(ca_dir)))  # type: ignore[arg-type]
    await ztunnel.start()
    print("READY", flush=True)
    await wait_stdin()
    await ztunnel.close()


def bench_tracer() -> Any:
    """``BENCH_TRACING=<percent>`` (``bench/waypoint_tracing.py``): a tracer sampling that
    share, exporting OTLP/HTTP to ``127.0.0.1:$BENCH_OTLP``; unset: no tracing."""
    sampling = os.environ.get("BENCH_TRACING")
    if sampling is None:
        return None
    from ambient.waypoint.tracing.otlp import ExportTarget, SpanExporter
    from ambient.waypoint.tracing.tracer import ProxyInfo, Tracer

    target = ExportTarget("127.0.0.1", int(os.environ["BENCH_OTLP"]), "http")
    exporter = SpanExporter(target, (("service.name", "waypoint.bench"),))
    info = ProxyInfo("waypoint~10.0.0.1~waypoint-0.bench~bench.svc.cluster.local",
                     "waypoint.bench", "bench", "waypoint")  # fmt: skip
    return Tracer(info, exporter.submit, float(sampling)), exporter


WAYPOINT_POD = Workload(
    uid="Kubernetes//Pod/bench/waypoint-0",
    name="waypoint-0",
    namespace="bench",
    addresses=(ipaddress.IPv4Address(WAYPOINT_IP),),
    service_account="waypoint",
    node="node-w",
    tunnel_protocol=TunnelProtocol.HBONE,
    labels=FrozenMap({"gateway.networking.k8s.io/gateway-name": "waypoint"}),
)


async def run_hosted_waypoint(ca_dir: Path, workers: int) -> None:
    """``--workers N``: the waypoint as a node proxy hosts it (``waypoint_factory``, an empty
    synced L7 configuration), with ``N`` processes sharing its listener."""
    from ambient.config import ConfigSet
    from ambient.waypoint.config import L7Config, waypoint_factory

    manager = CertificateManager(signer(ca_dir))  # type: ignore[arg-type]
    l7 = L7Config()
    l7.set_config(ConfigSet())
    hosted = waypoint_factory(state("node-w"), manager, l7, workers=workers)(WAYPOINT_POD)
    await hosted.start()
    print("READY", flush=True)
    await wait_stdin()
    await hosted.close()


async def run_waypoint(ca_dir: Path, workers: int = 0) -> None:
    if workers:
        await run_hosted_waypoint(ca_dir, workers)
        return
    manager = CertificateManager(signer(ca_dir))  # type: ignore[arg-type]
    traced = bench_tracer()
    tracing = (lambda: traced[0]) if traced is not None else None
    waypoint = Waypoint(
        "waypoint", "bench", [WAYPOINT_IP], state("waypoint"), manager, tracing=tracing
    )
    await waypoint.start()
    print("READY", flush=True)
    await wait_stdin()
    await waypoint.close()
    if traced is not None:
        await traced[1].aclose()
        print(f"spans exported={traced[1].exported} dropped={traced[1].dropped} "
              f"failed={traced[1].failed}", file=sys.stderr, flush=True)  # fmt: skip


class _App(asyncio.Protocol):
    """HTTP/1.1 keep-alive: every request with a Content-Length body gets a 1 KiB answer."""

    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n" + b"y" * 1024

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(self.RESPONSE)


async def run_server() -> None:
    if PROTOCOL is AppProtocol.GRPC:
        await run_grpc_server()
        return
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_App, SERVER_IP, APP_PORT, backlog=1024)
    print("READY", flush=True)
    await wait_stdin()
    server.close()


GRPC_METHOD = "/bench.Echo/Unary"
GRPC_REPLY = b"y" * 1024


async def run_grpc_server() -> None:
    """grpcio: ``/bench.Echo/Unary`` answers 1 KiB (raw bytes, no protobuf)."""
    import grpc
    import grpc.aio

    async def unary(request: bytes, context: object) -> bytes:
        return GRPC_REPLY

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
            ),
        )
    )
    server.add_insecure_port(f"{SERVER_IP}:{APP_PORT}")
    await server.start()
    print("READY", flush=True)
    await wait_stdin()
    await server.stop(0)


async def run_source(ca_dir: Path, sources: int = 1) -> None:
    """The client pod's ztunnel stand-in: TCP in, HBONE out with the client's certificate.

    ``sources`` > 1: that many connection pools, client connections spread over them in
    turn, i.e. HBONE connections as from that many source ztunnels (a waypoint's workers
    share out connections, not streams)."""
    ca = CertificateAuthority.load_or_create(ca_dir)
    cert = ca.issue(CLIENT.identity, timedelta(hours=1))
    pools = [ConnectionPool() for _ in range(sources)]
    turn = iter(range(1 << 62))
    loop = asyncio.get_running_loop()
    routes = {
        ENTRY_L7: (WAYPOINT_IP, SpiffeId.workload("bench", "waypoint"), f"{VIP}:80"),
        ENTRY_L4: (SERVER_IP, SERVER.identity, f"{SERVER_IP}:{APP_PORT}"),
    }

    tasks: set[asyncio.Task[None]] = set()

    class Entry(asyncio.Protocol):
        def __init__(self, port: int) -> None:
            self.port = port
            self.early: list[bytes] = []  # bytes that arrive before the tunnel is open

        def data_received(self, data: bytes) -> None:
            self.early.append(data)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            tcp: asyncio.Transport = transport  # type: ignore[assignment]
            tcp.pause_reading()
            task = asyncio.ensure_future(self.connect(tcp))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def connect(self, tcp: asyncio.Transport) -> None:
            try:
                await self._connect(tcp)
            except Exception as exc:
                print(f"source: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                tcp.abort()

        async def _connect(self, tcp: asyncio.Transport) -> None:
            host, identity, target = routes[self.port]
            peer = tcp.get_extra_info("peername")
            pool = pools[next(turn) % len(pools)]
            stream = await pool.open_stream(
                source=cert,
                destination=SocketAddress.parse(f"{host}:15008"),
                expected=[identity],
                request=ConnectRequest(
                    authority=SocketAddress.parse(target),
                    forwarded_for=SocketAddress.parse(f"{CLIENT_IP}:{peer[1]}"),
                ),
            )
            relay = TcpRelay(stream)
            relay.connection_made(tcp)
            tcp.set_protocol(relay)
            relay.start()
            for data in self.early:
                relay.data_received(data)
            tcp.resume_reading()

    servers = [
        await loop.create_server(lambda p=port: Entry(p), CLIENT_IP, port, backlog=1024)  # type: ignore[misc]
        for port in routes
    ]
    print("READY", flush=True)
    await wait_stdin()
    for server in servers:
        server.close()
    for pool in pools:
        await pool.close()


def spawn(*args: str, script: str = __file__) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


# -- the load generator -----------------------------------------------------------------

REQUEST = b"POST /api HTTP/1.1\r\nhost: server:80\r\ncontent-length: 1024\r\n\r\n" + b"x" * 1024


def stop(procs: Iterable[subprocess.Popen[str]], timeout: float = 30) -> None:
    """End the spawned roles: each exits when its stdin closes."""
    procs = list(procs)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=timeout)


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response {head[:60]!r}")
    lower = head.lower()
    start = lower.find(b"content-length:")
    await reader.readexactly(int(lower[start + 15 :].split(b"\r\n", 1)[0]))


class GrpcConnection:
    """One grpcio channel (one HTTP/2 connection) with the reader/writer pair's interface."""

    def __init__(self, port: int) -> None:
        import grpc.aio

        self.channel = grpc.aio.insecure_channel(f"{CLIENT_IP}:{port}")
        self.call = self.channel.unary_unary(GRPC_METHOD)

    async def close(self) -> None:
        await self.channel.close()


async def grpc_round_trip(connection: GrpcConnection, _: object = None) -> None:
    reply = await connection.call(b"x" * 1024)
    if len(reply) != 1024:
        raise RuntimeError(f"unexpected reply of {len(reply)} bytes")


async def open_pairs(port: int, conns: int) -> list[tuple[Any, Any]]:
    """``conns`` client connections: (reader, writer) for HTTP/1.1, (channel, channel) for gRPC."""
    if PROTOCOL is AppProtocol.GRPC:
        channels = [GrpcConnection(port) for _ in range(conns)]
        return [(c, c) for c in channels]
    return [await asyncio.open_connection(CLIENT_IP, port) for _ in range(conns)]


async def close_pairs(pairs: list[tuple[Any, Any]]) -> None:
    for _, writer in pairs:
        if isinstance(writer, GrpcConnection):
            await writer.close()
        else:
            writer.close()


def exchange(reader: Any, writer: Any) -> Any:
    if PROTOCOL is AppProtocol.GRPC:
        return grpc_round_trip(reader)
    return round_trip(reader, writer)


async def paced(
    port: int, rate: float, seconds: float, conns: int, pid: int, profile: Path | None = None
) -> dict[str, float]:
    pairs = await open_pairs(port, conns)
    for reader, writer in pairs:  # warm every connection (upstream keep-alive, pools)
        await exchange(reader, writer)
    latencies: list[float] = []
    interval = conns / rate
    per_conn = int(rate * seconds / conns)

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, offset: float
    ) -> None:
        next_at = time.perf_counter() + offset
        for _ in range(per_conn):
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            await exchange(reader, writer)
            latencies.append(time.perf_counter() - t0)
            next_at += interval

    spy = py_spy(pid, profile) if profile is not None else None
    (user0, sys0), start = cpu_split(pid), time.perf_counter()
    await asyncio.gather(*(one(r, w, i * interval / conns) for i, (r, w) in enumerate(pairs)))
    wall = time.perf_counter() - start
    user1, sys1 = cpu_split(pid)
    cpu = (user1 - user0 + sys1 - sys0) / wall
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    await close_pairs(pairs)
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "rate": len(latencies) / wall,
        "cpu": cpu,
        "sys_share": (sys1 - sys0) / max(user1 - user0 + sys1 - sys0, 1e-9),
        "rss": rss_mb(pid),
    }


async def max_rate(port: int, seconds: float, conns: int) -> float:
    pairs = await open_pairs(port, conns)
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await exchange(reader, writer)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in pairs))
    await close_pairs(pairs)
    return done / (time.perf_counter() - start)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a waypoint's worker processes), from ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [pid]
    while todo:
        one = todo.pop()
        pids.append(one)
        todo += children.get(one, [])
    return pids


def cpu_by_process(pid: int) -> dict[int, tuple[float, float]]:
    """User and system CPU seconds so far of ``pid`` and of each descendant."""
    tick = os.sysconf("SC_CLK_TCK")
    split = {}
    for one in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            split[one] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return split


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds so far of ``pid`` and its descendants (``/proc/PID/stat``)."""
    split = cpu_by_process(pid).values()
    return sum(u for u, _ in split), sum(s for _, s in split)


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy into ``out`` (collapsed stacks) until sent SIGINT.

    Blocking mode (the process is paused per sample): the non-blocking mode's samples
    are biased towards frames that sit in one C call (syscalls), as unstable stacks
    of running Python code are dropped."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attaches
    return spy


def rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants (MB)."""
    total = 0.0
    for one in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


async def measure(args: argparse.Namespace, pids: dict[str, int]) -> dict[str, dict[str, float]]:
    results = {}
    for label, port in (("l4", ENTRY_L4), ("l7", ENTRY_L7)):
        profile = args.profile / f"{args.protocol}-{label}.txt" if args.profile else None
        result = await paced(
            port, args.rate, args.seconds, args.connections, pids["waypoint"], profile
        )
        result["ztunnel_cpu"] = 0.0
        result["max_rate"] = await max_rate(port, args.seconds, args.connections)
        results[label] = result
    return results


async def measure_workers(
    args: argparse.Namespace, counts: list[Any], start: Any
) -> dict[Any, list[dict[str, float]]]:
    """Each round, for each worker count (or tree, ``--baseline``) in turn: a waypoint with
    that many processes, the paced run and the maximum rate through it, then it is stopped."""
    results: dict[Any, list[dict[str, float]]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            proc = start(n)
            try:
                result = await paced(ENTRY_L7, args.rate, args.seconds, args.connections, proc.pid)
                before = cpu_by_process(proc.pid)
                result["max_rate"] = await max_rate(ENTRY_L7, args.seconds, args.connections)
                after = cpu_by_process(proc.pid)
                used = sorted(
                    (sum(after[p]) - sum(before.get(p, (0.0, 0.0))) for p in after), reverse=True
                )
                result["shares"] = "/".join(f"{u / max(sum(used), 1e-9):.0%}" for u in used)  # type: ignore[assignment]
                result["load"] = os.getloadavg()[0]
                results[n].append(result)
            finally:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=60)
    return results


def workers_main(args: argparse.Namespace, counts: list[int]) -> None:
    """``--workers 1,2``: the same waypoint (hosted, as a node proxy runs it) with each
    count of worker processes, alternated round by round in one run."""
    with tempfile.TemporaryDirectory(prefix="bench-waypoint-") as tmp:
        ca_dir = Path(tmp)
        CertificateAuthority.load_or_create(ca_dir)
        common = ("--ca", str(ca_dir), "--protocol", args.protocol)
        procs = {
            "ztunnel": spawn("--role", "ztunnel", *common),
            "server": spawn("--role", "server", *common),
            "source": spawn("--role", "source", *common, "--sources", str(args.sources)),
        }

        def start(n: int) -> subprocess.Popen[str]:
            return spawn("--role", "waypoint", *common, "--workers", str(n))

        try:
            results = uvloop.run(measure_workers(args, counts, start))
        finally:
            stop(procs.values())
    what = "unary gRPC, 1 KiB each way" if args.protocol == "grpc" else "HTTP/1.1, 1 KiB each way"
    print(f"protocol: {what}; {args.connections} client connections over {args.sources} "
          f"source pools (HBONE connections to the waypoint)")  # fmt: skip
    print(f"{'waypoint processes':<20} {'round':>5} {'load':>5} {'max req/s':>10} "
          f"{'CPU us/req':>10} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7}  CPU split at max")  # fmt: skip
    for n, rounds in results.items():
        for i, r in enumerate(rounds, 1):
            per_request = r["cpu"] / r["rate"] * 1e6
            print(f"{n:<20} {i:>5} {r['load']:>5.1f} {r['max_rate']:>10.0f} {per_request:>10.0f} "
                  f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['rss']:>7.1f}  {r['shares']}")  # fmt: skip
    base = results[counts[0]]
    for n in counts[1:]:
        ratios = [b["max_rate"] / a["max_rate"] for a, b in zip(base, results[n], strict=True)]
        print(f"maximum rate, {n} processes / {counts[0]}: "
              + ", ".join(f"{x:.2f}x" for x in ratios))  # fmt: skip


def baseline_main(args: argparse.Namespace) -> None:
    """``--baseline DIR``: DIR's waypoint (another tree, e.g. main exported with ``git
    archive``: its own ``bench/waypoint.py`` and ``src``) against this tree's, alternated
    round by round in one run, the other roles from this tree."""
    old_script = str(args.baseline.resolve() / "bench" / "waypoint.py")
    with tempfile.TemporaryDirectory(prefix="bench-waypoint-") as tmp:
        ca_dir = Path(tmp)
        CertificateAuthority.load_or_create(ca_dir)
        common = ("--ca", str(ca_dir), "--protocol", args.protocol)
        procs = {
            "ztunnel": spawn("--role", "ztunnel", *common),
            "server": spawn("--role", "server", *common),
            "source": spawn("--role", "source", *common),
        }

        def start(label: str) -> subprocess.Popen[str]:
            script = old_script if label == "before" else __file__
            return spawn("--role", "waypoint", *common, script=script)

        try:
            results = uvloop.run(measure_workers(args, ["before", "after"], start))
        finally:
            stop(procs.values())
    what = "unary gRPC, 1 KiB each way" if args.protocol == "grpc" else "HTTP/1.1, 1 KiB each way"
    print(f"protocol: {what}; before = {args.baseline}, after = this tree; "
          f"paced at {args.rate:g}/s over {args.connections} connections")  # fmt: skip
    print(f"{'waypoint':<8} {'round':>5} {'load':>5} {'max req/s':>10} {'CPU us/req':>10} "
          f"{'kernel %':>8} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7}")  # fmt: skip
    per_request = {label: [r["cpu"] / r["rate"] * 1e6 for r in rounds]
                   for label, rounds in results.items()}  # fmt: skip
    for label, rounds in results.items():
        for i, r in enumerate(rounds, 1):
            print(f"{label:<8} {i:>5} {r['load']:>5.1f} {r['max_rate']:>10.0f} "
                  f"{per_request[label][i - 1]:>10.0f} {r['sys_share'] * 100:>8.0f} "
                  f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['rss']:>7.1f}")  # fmt: skip
    ratios = [a / b for b, a in zip(per_request["before"], per_request["after"], strict=True)]
    print("CPU per request, after / before, by round: " + ", ".join(f"{x:.2f}x" for x in ratios))
    medians = {label: sorted(v)[len(v) // 2] for label, v in per_request.items()}
    print(f"median CPU per request: before {medians['before']:.0f} us, "
          f"after {medians['after']:.0f} us ({medians['after'] / medians['before']:.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the waypoint during the paced runs, into DIR"
    )
    parser.add_argument(
        "--workers",
        help="e.g. 1,2: compare a hosted waypoint with each count of worker processes",
    )
    parser.add_argument("--sources", type=int, default=1, help="source pools (see run_source)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="DIR: another tree's waypoint (e.g. main via git archive) against this one's, "
        "alternated round by round (--rounds)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds with --workers/--baseline")
    parser.add_argument("--role", choices=["ztunnel", "waypoint", "server", "source"])
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure(args.protocol)
    roles = {
        "ztunnel": lambda: run_ztunnel(args.ca),
        "waypoint": lambda: run_waypoint(args.ca, int(args.workers or 0)),
        "server": run_server,
        "source": lambda: run_source(args.ca, args.sources),
    }
    if args.role == "waypoint" and os.environ.get("BENCH_PROFILE"):
        import cProfile  # the waypoint's profile, written when it exits

        # BENCH_PROFILE_CLOCK=cpu: the main thread's CPU time (a wall clock counts the time a
        # send that wakes a peer on the shared core spends preempted).
        cpu = os.environ.get("BENCH_PROFILE_CLOCK") == "cpu"
        profile = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        profile.enable()
        try:
            uvloop.run(roles[args.role]())
        finally:
            profile.disable()
            profile.dump_stats(os.environ["BENCH_PROFILE"])
        return
    if args.role:
        logging.basicConfig(level=logging.WARNING, format=f"{args.role}: %(message)s")
        if os.environ.get("BENCH_DEBUG"):
            logging.getLogger("ambient").setLevel(logging.DEBUG)
        uvloop.run(roles[args.role]())
        return

    if args.workers:
        workers_main(args, [int(n) for n in args.workers.split(",")])
        return
    if args.baseline:
        baseline_main(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-waypoint-") as tmp:
        ca_dir = Path(tmp)
        CertificateAuthority.load_or_create(ca_dir)
        procs = {
            role: spawn("--role", role, "--ca", str(ca_dir), "--protocol", args.protocol)
            for role in roles
        }
        try:
            pids = {role: p.pid for role, p in procs.items()}
            rss_idle = rss_mb(pids["waypoint"])
            results = uvloop.run(measure(args, pids))
        finally:
            stop(procs.values())
    l4, l7 = results["l4"], results["l7"]
    what = "unary gRPC, 1 KiB each way" if args.protocol == "grpc" else "HTTP/1.1, 1 KiB each way"
    print(f"protocol: {what}")
    print(f"{'measure':<52} {'L4 only':>10} {'waypoint':>10} {'ratio':>8}")
    for label, key in (
        (f"1 KiB RR at {args.rate:g}/s, p50 (ms)", "p50_ms"),
        (f"1 KiB RR at {args.rate:g}/s, p99 (ms)", "p99_ms"),
        ("achieved rate (req/s)", "rate"),
        (f"maximum rate, {args.connections} connections (req/s)", "max_rate"),
    ):
        print(f"{label:<52} {l4[key]:>10.2f} {l7[key]:>10.2f} {l7[key] / l4[key]:>7.2f}x")
    print(
        f"{'added latency by the waypoint p50 / p99 (ms)':<52} "
        f"{l7['p50_ms'] - l4['p50_ms']:>10.2f} {l7['p99_ms'] - l4['p99_ms']:>10.2f}"
    )
    print(f"{f'waypoint CPU at {args.rate:g} req/s (cores)':<52} {'':>10} {l7['cpu']:>10.3f}")
    per_request = l7["cpu"] / l7["rate"] * 1e6
    print(f"{'waypoint CPU per request at that rate (us)':<52} {'':>10} {per_request:>10.0f}")
    print(
        f"{'  of which in the kernel (system time, %)':<52} {'':>10} {l7['sys_share'] * 100:>10.0f}"
    )
    print(f"{'waypoint RSS idle / after the runs (MB)':<52} {rss_idle:>10.1f} {l7['rss']:>10.1f}")
    print(f"load average after the runs: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
