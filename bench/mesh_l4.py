"""L4 mesh benchmark: client -> ztunnel -> HBONE -> ztunnel -> server, against direct TCP in the same run.

    .venv/bin/python bench/mesh_l4.py [--seconds 5] [--rate 1000] [--pods 100]

Two ztunnels run in their own processes (node-1 with the client pod and
``--pods``-1 idle pods, node-2 with the server pod), fed a static state; the
server app runs in a third process, the load generator in this one. Figures:
bulk MB/s over one connection; 1 KiB request/response latency p50/p99 at a
fixed rate on one connection; new connections per second (16 concurrent,
one round trip each); CPU (cores) of each ztunnel during the fixed-rate
run; RSS of each at the end, and again after ``--settle`` idle seconds. The
client reaches the server's service VIP through its ztunnel's SOCKS5 port;
the baseline dials the server pod directly. ``--access-log``: the ztunnels log
at ``info`` as ``ambient ztunnel`` does by default (an access line per
connection, in ztunnel's format), to ``/dev/null``; without it they log nothing.

    sudo .venv/bin/python bench/mesh_l4.py --netns [--seconds 5] [--rate 1000] [--pods 20]

``--netns`` (root): transparent capture as ``ambient up --netns`` runs it. The
node agent (in this process) makes a fabric, two node namespaces and a
namespace per pod (client and ``--pods``-1 idle pods on node-1, server on
node-2); each ztunnel runs in its own process and opens its in-pod listeners
(15001/15006/15008/15053) through ``setns``; nftables redirects. The server and
the load generator run inside their pods' namespaces (``ip netns exec``); the
client is an ordinary TCP client that knows nothing of the mesh. First the
pods are out of the mesh and the client dials the server pod across the
namespaces (direct pod-to-pod TCP, no capture), then both ztunnels are told
the pods are enrolled, and once the redirection is in place the client dials
the service VIP (captured at 15001, HBONE across the node link, 15008 in the
server pod). Everything it creates is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import uvloop  # noqa: E402

from ambient import netns as ns  # noqa: E402
from ambient.config.frozen import FrozenMap  # noqa: E402
from ambient.identity.ca import CertificateAuthority  # noqa: E402
from ambient.identity.manager import CertificateManager  # noqa: E402
from ambient.identity.spiffe import SpiffeId  # noqa: E402
from ambient.netns import NetnsThread  # noqa: E402
from ambient.nodeagent.redirection import redirection_rules  # noqa: E402
from ambient.state.proxy import ProxyState  # noqa: E402
from ambient.state.workload import Port, Service, TunnelProtocol, Workload  # noqa: E402
from ambient.ztunnel.proxy import Ztunnel  # noqa: E402

NET = "127.30"
CLIENT_IP, SERVER_IP, VIP = f"{NET}.0.1", f"{NET}.1.1", f"{NET}.2.1"
NODES = {"node-1": "127.31.0.1", "node-2": "127.31.0.2"}
ECHO, SINK = 9000, 9001
# --netns: routable pod and service addresses, as ``ambient up --netns`` gives them
NETNS_NET = "10.244"
NETNS_CLIENT_IP, NETNS_SERVER_IP, NETNS_VIP = "10.244.0.1", "10.244.1.1", "10.96.0.1"


def service(vip: str) -> Service:
    return Service(
        name="server",
        namespace="bench",
        hostname="server.bench.svc.cluster.local",
        addresses=(ipaddress.IPv4Address(vip),),
        ports=(Port(ECHO, ECHO), Port(SINK, SINK)),
    )


SERVICE = service(VIP)


def workloads(pods: int, netns: bool = False, enrolled: bool = True) -> list[Workload]:
    net = NETNS_NET if netns else NET
    client_ip, server_ip = (NETNS_CLIENT_IP, NETNS_SERVER_IP) if netns else (CLIENT_IP, SERVER_IP)
    svc = service(NETNS_VIP) if netns else SERVICE
    protocol = TunnelProtocol.HBONE if enrolled else TunnelProtocol.NONE

    def pod(name: str, ip: str, node: str, sa: str, services: bool = False) -> Workload:
        return Workload(
            uid=f"Kubernetes//Pod/bench/{name}",
            name=name,
            namespace="bench",
            addresses=(ipaddress.IPv4Address(ip),),
            service_account=sa,
            node=node,
            tunnel_protocol=protocol,
            workload_name=name,
            canonical_name=name,
            canonical_revision="v1",
            services=FrozenMap({svc.key: svc.ports}) if services else FrozenMap(),
        )

    result = [
        pod("client", client_ip, "node-1", "client"),
        pod("server", server_ip, "node-2", "server", True),
    ]
    for i in range(pods - 1):
        result.append(pod(f"idle-{i}", f"{net}.{10 + i // 250}.{1 + i % 250}", "node-1", "idle"))
    return result


def resources(pods: int, netns: bool, enrolled: bool = True) -> list[Workload | Service]:
    return [service(NETNS_VIP) if netns else SERVICE, *workloads(pods, netns, enrolled)]


# -- roles in child processes ---------------------------------------------------------


class BenchPodNetworks:
    """``PodNetworks`` for a ztunnel process: the namespaces the parent's node agent made."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.threads: dict[str, NetnsThread] = {}

    def name(self, workload: Workload) -> str:
        return f"{self.prefix}-pod.{workload.namespace}.{workload.name}"

    def netns_of(self, workload: Workload) -> NetnsThread | None:
        name = self.name(workload)
        if name not in self.threads:
            self.threads[name] = NetnsThread(name)
        return self.threads[name]

    async def set_redirection(self, workload: Workload, enabled: bool) -> None:
        await asyncio.to_thread(ns.nft, redirection_rules(enabled), netns=self.name(workload))


def log_to_devnull() -> None:
    """Log as ``ambient ztunnel`` does by default (info: an access line per connection),
    into /dev/null."""
    from ambient.logconfig import setup_logging

    setup_logging("info")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (the process's log)


async def run_ztunnel(node: str, ca_dir: Path, pods: int, prefix: str | None) -> None:
    """A node's ztunnel; with ``prefix`` (--netns) in-pod, pods out of the mesh until the
    parent writes ``enrol``."""
    ca = CertificateAuthority.load_or_create(ca_dir)

    async def sign(identity: SpiffeId, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    netns = prefix is not None
    state = ProxyState(node)
    state.apply(resources(pods, netns, enrolled=not netns), [])
    networks = BenchPodNetworks(prefix) if prefix is not None else None
    ztunnel = Ztunnel(node, NODES[node], state, CertificateManager(sign), pod_networks=networks)
    await ztunnel.start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "enrol":
            state.apply(resources(pods, netns, enrolled=True), [])
            await ztunnel.reconcile()
            print("ENROLLED", flush=True)
    await ztunnel.close()


async def run_server(server_ip: str) -> None:
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
        await asyncio.start_server(echo, server_ip, ECHO, backlog=1024),
        await asyncio.start_server(sink, server_ip, SINK, backlog=1024),
    ]
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def spawn(*args: str, netns: str | None = None) -> subprocess.Popen[str]:
    where = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen(
        [*where, sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


# -- the load generator -----------------------------------------------------------------


CAPTURED = False  # --netns load generator: the mesh is reached by dialling the VIP (captured)


async def open_conn(via_mesh: bool, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if CAPTURED:
        return await asyncio.open_connection(NETNS_VIP if via_mesh else NETNS_SERVER_IP, port)
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
    sys_before = [sys_seconds(p) for p in pids]
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
    kernel = [(sys_seconds(p) - b) / wall for p, b in zip(pids, sys_before, strict=True)]
    writer.close()
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "achieved_rate": count / wall,
        **{f"cpu_{i}": c for i, c in enumerate(cpu)},
        **{f"sys_{i}": c for i, c in enumerate(kernel)},
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


def sys_seconds(pid: int) -> float:
    """A process's CPU time in the kernel so far (system time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


SETTLE = 11.0  # seconds idle before the second RSS reading: one heap trim (``ambient.memtrim``)


def rss_pair(pids: list[int], settle: float) -> list[float]:
    """RSS of each process at the end of the run, then again after ``settle`` idle seconds."""
    end = [rss_mb(pid) for pid in pids]
    time.sleep(settle)
    return [*end, *(rss_mb(pid) for pid in pids)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def profiled(args: argparse.Namespace, pids: list[int], via: bool, phase: str) -> Any:
    """With ``--profile DIR``: sample both ztunnels with py-spy during a mesh phase
    (collapsed stacks in ``DIR/<phase>-<pid>.txt``, for flame graphs or grep)."""
    if not via or args.profile is None:
        yield
        return
    args.profile.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                # Blocking mode: --nonblocking drops the samples whose stack is unstable (running
                # Python), over-weighting frames that sit in a syscall.
                *("--pid", str(pid), "--format", "raw", "--rate", "200"),
                *("--output", str(args.profile / f"{phase}-{pid}.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=30)


async def measure_one(args: argparse.Namespace, pids: list[int], via: bool) -> dict[str, float]:
    reader, writer = await open_conn(via, ECHO)  # warm: HBONE connection, certificates
    writer.write(b"!")
    await reader.readexactly(1)
    writer.close()
    # CPU per unit of work is less sensitive to other load on the machine than rates.
    cpu = [cpu_seconds(p) for p in pids]
    with profiled(args, pids, via, "bulk"):
        bulk_mb_s = await bulk(via, args.seconds)
    bulk_cpu = [
        (cpu_seconds(p) - c) / (bulk_mb_s * args.seconds) for p, c in zip(pids, cpu, strict=True)
    ]
    with profiled(args, pids, via, "rr"):
        rr = await request_response(via, args.rate, args.seconds, pids)
    cpu = [cpu_seconds(p) for p in pids]
    with profiled(args, pids, via, "conns"):
        conn_per_s = await connections(via, args.seconds)
    conn_cpu = [
        (cpu_seconds(p) - c) / (conn_per_s * args.seconds) for p, c in zip(pids, cpu, strict=True)
    ]
    return {
        "bulk_mb_s": bulk_mb_s,
        **rr,
        "conn_per_s": conn_per_s,
        **{f"bulk_cpu_ms_per_mb_{i}": c * 1e3 for i, c in enumerate(bulk_cpu)},
        **{f"conn_cpu_us_{i}": c * 1e6 for i, c in enumerate(conn_cpu)},
    }


async def measure(args: argparse.Namespace, pids: list[int]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for label, via in (("direct", False), ("mesh", True)):
        results[label] = await measure_one(args, pids, via)
    return results


# -- --netns: namespaces, in-pod ztunnels, the load generator inside the client pod ----------


def run_netns(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Both phases (direct, then captured) with everything made and removed here."""
    from ambient.nodeagent.agent import NodeAgent, cleanup

    problem = ns.missing_capability()
    if problem is not None:
        sys.exit(f"bench/mesh_l4.py --netns: {problem}")

    def interrupted(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started with SIGINT ignored (``cmd &``)
    with tempfile.TemporaryDirectory(prefix="bench-l4-netns-") as tmp:
        root = Path(tmp)
        CertificateAuthority.load_or_create(root)
        agent = NodeAgent(root)
        procs: list[subprocess.Popen[str]] = []
        try:
            pods = workloads(args.pods, netns=True, enrolled=False)
            uvloop.run(_make_topology(agent, pods))
            for node in NODES:
                procs.append(
                    spawn(
                        "--role",
                        "ztunnel",
                        "--node",
                        node,
                        "--ca",
                        str(root),
                        "--pods",
                        str(args.pods),
                        "--prefix",
                        agent.prefix,
                        *(["--access-log"] if args.access_log else []),
                    )
                )
            server, client = (agent.pod_netns("bench", n) for n in ("server", "client"))
            procs.append(spawn("--role", "server", "--server-ip", NETNS_SERVER_IP, netns=server))
            pids = [str(p.pid) for p in procs[:2]]
            results = {"direct": _load(args, client, pids, mesh=False)}
            for proc in procs[:2]:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("enrol\n")
                proc.stdin.flush()
            for proc in procs[:2]:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ENROLLED":
                    raise RuntimeError("a ztunnel did not enrol its pods")
            for name in (client, server):
                rules = ns.run("nft", "list", "table", "inet", "ambient", netns=name)
                if "redirect to :15001" not in rules:
                    raise RuntimeError(f"no redirection in {name}")
            results["mesh"] = _load(args, client, pids, mesh=True)
            rss = rss_pair([p.pid for p in procs[:2]], args.settle)
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            uvloop.run(agent.close())
            cleanup(agent.prefix)  # again, in case closing was interrupted
    return results, rss


async def _make_topology(agent: Any, pods: list[Workload]) -> None:
    await agent.start()
    for node, ip in NODES.items():
        await agent.add_node(node, ip, ProxyState(node))
    for pod in pods:
        await agent.add_pod(pod.namespace, pod.name, pod.node, str(pod.addresses[0]))
    for node in agent.nodes.values():  # only the agent's threads: the DNS ends with this loop
        if node.dns is not None:
            node.dns.close()
        if node.dns_tcp is not None:
            node.dns_tcp.close()


def _load(args: argparse.Namespace, netns: str, pids: list[str], *, mesh: bool) -> dict[str, float]:
    """One phase of the load generator, run inside the client pod's namespace."""
    argv = ["ip", "netns", "exec", netns, sys.executable, __file__, "--role", "load"]
    argv += ["--seconds", str(args.seconds), "--rate", str(args.rate), "--pids", ",".join(pids)]
    argv += ["--mesh"] if mesh else []
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr.strip()}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--pods", type=int, help="pods on node-1 (default 100; --netns: 20)")
    parser.add_argument("--netns", action="store_true", help="transparent capture (root)")
    parser.add_argument(
        "--settle", type=float, default=SETTLE, help="idle seconds before the second RSS reading"
    )
    parser.add_argument(
        "--profile", type=Path, help="sample the ztunnels with py-spy per mesh phase, into DIR"
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="the ztunnels log at info (an access line per connection), to /dev/null",
    )
    parser.add_argument("--role", choices=["ztunnel", "server", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--server-ip", default=SERVER_IP, help=argparse.SUPPRESS)
    parser.add_argument("--pids", help=argparse.SUPPRESS)
    parser.add_argument("--mesh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pods is None:
        args.pods = 20 if args.netns else 100
    if args.role == "ztunnel":
        if args.access_log:
            log_to_devnull()
        uvloop.run(run_ztunnel(args.node, args.ca, args.pods, args.prefix))
        return
    if args.role == "server":
        uvloop.run(run_server(args.server_ip))
        return
    if args.role == "load":
        global CAPTURED
        CAPTURED = True
        pids = [int(p) for p in args.pids.split(",")]
        print(json.dumps(uvloop.run(measure_one(args, pids, args.mesh))))
        return
    if args.netns:
        try:
            results, rss = run_netns(args)
        except KeyboardInterrupt:
            sys.exit("interrupted; everything the benchmark made is removed")
        report(args, results, rss, "transparent capture (--netns)")
        return

    with tempfile.TemporaryDirectory(prefix="bench-l4-") as tmp:
        ca_dir = Path(tmp)
        CertificateAuthority.load_or_create(ca_dir)
        procs = [
            spawn(
                "--role",
                "ztunnel",
                "--node",
                node,
                "--ca",
                str(ca_dir),
                "--pods",
                str(args.pods),
                *(["--access-log"] if args.access_log else []),
            )
            for node in NODES
        ]
        procs.append(spawn("--role", "server"))
        try:
            pids = [p.pid for p in procs[:2]]
            results = uvloop.run(measure(args, pids))
            rss = rss_pair(pids, args.settle)
        finally:
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.close()
            for proc in procs:
                proc.wait(timeout=30)
    report(args, results, rss, "SOCKS5 (local mode)")


def report(
    args: argparse.Namespace, results: dict[str, dict[str, float]], rss: list[float], mode: str
) -> None:
    direct, mesh = results["direct"], results["mesh"]
    print(f"mesh: {mode}")
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
    if "sys_0" in mesh:
        print(
            f"{'  of which in the kernel (cores)':<50} {mesh['sys_0']:>10.3f} {mesh['sys_1']:>10.3f}"
        )
    print(
        f"{f'ztunnel RSS, node-1 ({args.pods} pods) / node-2 (MB)':<50} {rss[0]:>10.1f} {rss[1]:>10.1f}"
    )
    print(f"{f'  the same after {args.settle:g} s idle (MB)':<50} {rss[2]:>10.1f} {rss[3]:>10.1f}")
    if "conn_cpu_us_0" in mesh:
        print(
            f"{'ztunnel CPU per new connection, node-1 / node-2 (µs)':<50} {mesh['conn_cpu_us_0']:>10.0f} {mesh['conn_cpu_us_1']:>10.0f}"
        )
        print(
            f"{'ztunnel CPU per bulk MB, node-1 / node-2 (ms)':<50} {mesh['bulk_cpu_ms_per_mb_0']:>10.2f} {mesh['bulk_cpu_ms_per_mb_1']:>10.2f}"
        )


if __name__ == "__main__":
    main()
