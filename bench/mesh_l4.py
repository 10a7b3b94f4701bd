"""L4 mesh benchmark: client -> ztunnel -> HBONE -> ztunnel -> server, against direct TCP in the same run.

    .venv/bin/python bench/mesh_l4.py [--seconds 5] [--rate 1000] [--pods 100]

Two ztunnels run in their own processes (node-1 with the client pod and
``--pods``-1 idle pods, node-2 with the server pod), fed a static state; the
server app runs in a third process, the load generator in this one. Figures:
bulk MB/s over one connection; 1 KiB request/response latency p50/p99 at a
fixed rate on one connection; new connections per second (16 concurrent,
one round trip each); CPU (cores) and RSS of each ztunnel during the
fixed-rate run. The client reaches the server's service VIP through its
ztunnel's SOCKS5 port; the baseline dials the server pod directly.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import uvloop  # noqa: E402

from ambient.api.workload import Port, Service, TunnelProtocol, Workload  # noqa: E402
from ambient.config.frozen import FrozenMap  # noqa: E402
from ambient.identity.ca import CertificateAuthority  # noqa: E402
from ambient.identity.manager import CertificateManager  # noqa: E402
from ambient.identity.spiffe import SpiffeId  # noqa: E402
from ambient.ztunnel.proxy import Ztunnel  # noqa: E402
from ambient.ztunnel.state import ProxyState  # noqa: E402

NET = "127.30"
CLIENT_IP, SERVER_IP, VIP = f"{NET}.0.1", f"{NET}.1.1", f"{NET}.2.1"
NODES = {"node-1": "127.31.0.1", "node-2": "127.31.0.2"}
ECHO, SINK = 9000, 9001
SERVICE = Service(
    name="server",
    namespace="bench",
    hostname="server.bench.svc.cluster.local",
    addresses=(ipaddress.IPv4Address(VIP),),
    ports=(Port(ECHO, ECHO), Port(SINK, SINK)),
)


def workloads(pods: int) -> list[Workload]:
    def pod(name: str, ip: str, node: str, sa: str, services: bool = False) -> Workload:
        return Workload(
            uid=f"Kubernetes//Pod/bench/{name}",
            name=name,
            namespace="bench",
            addresses=(ipaddress.IPv4Address(ip),),
            service_account=sa,
            node=node,
            tunnel_protocol=TunnelProtocol.HBONE,
            workload_name=name,
            canonical_name=name,
            canonical_revision="v1",
            services=FrozenMap({SERVICE.key: SERVICE.ports}) if services else FrozenMap(),
        )

    result = [
        pod("client", CLIENT_IP, "node-1", "client"),
        pod("server", SERVER_IP, "node-2", "server", True),
    ]
    for i in range(pods - 1):
        result.append(pod(f"idle-{i}", f"{NET}.{10 + i // 250}.{1 + i % 250}", "node-1", "idle"))
    return result


# -- roles in child processes ---------------------------------------------------------


async def run_ztunnel(node: str, ca_dir: Path, pods: int) -> None:
    ca = CertificateAuthority.load_or_create(ca_dir)

    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    state = ProxyState(node)
    state.apply([SERVICE, *workloads(pods)], [])
    ztunnel = Ztunnel(node, NODES[node], state, CertificateManager(sign))
    await ztunnel.start()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await ztunnel.close()


async def run_server() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(256 * 1024):
            total += len(data)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    servers = [
        await asyncio.start_server(echo, SERVER_IP, ECHO, backlog=1024),
        await asyncio.start_server(sink, SERVER_IP, SINK, backlog=1024),
    ]
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def spawn(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


# -- the load generator -----------------------------------------------------------------


async def open_conn(via_mesh: bool, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if not via_mesh:
        return await asyncio.open_connection(SERVER_IP, port)
    reader, writer = await asyncio.open_connection(CLIENT_IP, 15080)
    writer.write(
        b"\x05\x01\x00"
        + b"\x05\x01\x00\x01"
        + ipaddress.IPv4Address(VIP).packed
        + port.to_bytes(2, "big")
    )
    reply = await reader.readexactly(2 + 10)
    if reply[1] != 0 or reply[3] != 0:
        raise ConnectionError(f"SOCKS5 refused: {reply!r}")
    return reader, writer


async def bulk(via_mesh: bool, seconds: float) -> float:
    reader, writer = await open_conn(via_mesh, SINK)
    chunk = b"\0" * (256 * 1024)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    total = int(await reader.read())
    elapsed = time.perf_counter() - start
    writer.close()
    return total / 1e6 / elapsed


async def request_response(
    via_mesh: bool, rate: float, seconds: float, pids: list[int]
) -> dict[str, float]:
    reader, writer = await open_conn(via_mesh, ECHO)
    message = b"x" * 1024
    latencies: list[float] = []
    interval = 1.0 / rate
    cpu_before = [cpu_seconds(p) for p in pids]
    start = time.perf_counter()
    next_at = start
    count = int(rate * seconds)
    for _ in range(count):
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        writer.write(message)
        await reader.readexactly(len(message))
        latencies.append(time.perf_counter() - t0)
        next_at += interval
    wall = time.perf_counter() - start
    cpu = [(cpu_seconds(p) - b) / wall for p, b in zip(pids, cpu_before, strict=True)]
    writer.close()
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "achieved_rate": count / wall,
        **{f"cpu_{i}": c for i, c in enumerate(cpu)},
    }


async def connections(via_mesh: bool, seconds: float, concurrency: int = 16) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            reader, writer = await open_conn(via_mesh, ECHO)
            writer.write(b"!")
            await reader.readexactly(1)
            writer.close()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(args: argparse.Namespace, pids: list[int]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for label, via in (("direct", False), ("mesh", True)):
        await open_conn(via, ECHO)  # warm: HBONE connection, certificates
        results[label] = {
            "bulk_mb_s": await bulk(via, args.seconds),
            **await request_response(via, args.rate, args.seconds, pids),
            "conn_per_s": await connections(via, args.seconds),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--role", choices=["ztunnel", "server"], help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "ztunnel":
        uvloop.run(run_ztunnel(args.node, args.ca, args.pods))
        return
    if args.role == "server":
        uvloop.run(run_server())
        return

    with tempfile.TemporaryDirectory(prefix="bench-l4-") as tmp:
        ca_dir = Path(tmp)
        CertificateAuthority.load_or_create(ca_dir)
        procs = [
            spawn(
                "--role", "ztunnel", "--node", node, "--ca", str(ca_dir), "--pods", str(args.pods)
            )
            for node in NODES
        ]
        procs.append(spawn("--role", "server"))
        try:
            pids = [p.pid for p in procs[:2]]
            results = uvloop.run(measure(args, pids))
            rss = [rss_mb(pid) for pid in pids]
        finally:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.close()
            for proc in procs:
                proc.wait(timeout=30)
    direct, mesh = results["direct"], results["mesh"]
    print(f"{'measure':<50} {'direct':>10} {'mesh':>10} {'mesh/direct':>12}")
    for label, key in (
        ("bulk throughput, 1 connection (MB/s)", "bulk_mb_s"),
        (f"1 KiB RR at {args.rate:g}/s, p50 (ms)", "p50_ms"),
        (f"1 KiB RR at {args.rate:g}/s, p99 (ms)", "p99_ms"),
        ("new connections per second (16 concurrent)", "conn_per_s"),
    ):
        print(
            f"{label:<50} {direct[key]:>10.3f} {mesh[key]:>10.3f} {mesh[key] / direct[key]:>11.2f}x"
        )
    print(
        f"{'added latency p50 / p99 (ms)':<50} {mesh['p50_ms'] - direct['p50_ms']:>10.3f} {mesh['p99_ms'] - direct['p99_ms']:>10.3f}"
    )
    print(
        f"{'achieved request rate (req/s)':<50} {direct['achieved_rate']:>10.0f} {mesh['achieved_rate']:>10.0f}"
    )
    print(
        f"{'ztunnel CPU at that rate, node-1 / node-2 (cores)':<50} {mesh['cpu_0']:>10.3f} {mesh['cpu_1']:>10.3f}"
    )
    print(
        f"{f'ztunnel RSS, node-1 ({args.pods} pods) / node-2 (MB)':<50} {rss[0]:>10.1f} {rss[1]:>10.1f}"
    )


if __name__ == "__main__":
    main()
