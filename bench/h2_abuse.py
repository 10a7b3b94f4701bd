"""What HTTP/2 abuse costs a ztunnel, before and after the defences (issue 12 items 3, 5, 7).

    .venv/bin/python bench/h2_abuse.py [--baseline-ref REF] [--pairs 5000] [--flood-seconds 5]

A real ``Ztunnel`` (one enrolled pod, uvloop, its own process) is attacked over
real TLS by a peer holding a valid mesh certificate, writing raw frames
(hyperframe, ``tests/h2attack.py``); the pod's application is another process
that counts the connections ztunnel opens to it. While each attack runs, a
legitimate client opens tunnels one after another (CONNECT, 200, one byte
echoed) on a connection it opened before the attack, and fresh connections
(TLS handshake included). Scenarios, each on a fresh ztunnel:

- no attack: the reference for the tunnels' latency on this machine;
- rapid reset: ``--pairs`` HEADERS(CONNECT)+RST_STREAM pairs in one write;
- SETTINGS flood and PING flood: frames written for ``--flood-seconds`` by a
  peer that never reads (a 4 KiB receive buffer);
- CONTINUATION: 6 connections, each HEADERS without END_HEADERS then up to 63
  CONTINUATION frames of 1 MiB, held open.

Reported per scenario: ztunnel CPU (user+system, from /proc) from the attack's
start until it is idle again, application dials, what the attacker got back
(GOAWAY code), the legitimate tunnels' latency during the attack, and ztunnel's
RSS before, at its peak during, and after the attacker left.

The baseline is the same ztunnel from ``--baseline-ref`` (default: the last
commit before the defences), its ``src/`` exported with ``git archive`` and run
in the same way in the same run; nothing is disabled by a flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The ztunnel under test may come from another tree (--src): it must win over ours.
_SRC = Path(sys.argv[sys.argv.index("--src") + 1]) if "--src" in sys.argv else ROOT / "src"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(_SRC))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

BASELINE_REF = "4bd5c81"  # main before the HTTP/2 abuse defences (issue 12 items 3-5, 7)
NODE_IP = "127.77.0.10"
ORDERS_IP = "127.77.0.2"
WEB_IP = "127.77.0.1"
APP_PORT = 8080
TICK = os.sysconf("SC_CLK_TCK")


# -- the processes under test -----------------------------------------------------------------


def workloads() -> list[Any]:
    import ipaddress

    try:
        from ambient.state.workload import TunnelProtocol, Workload
    except ImportError:  # a baseline tree from before ambient.state (e.g. the default one)
        from ambient.api.workload import TunnelProtocol, Workload  # type: ignore[no-redef]

    def pod(name: str, addr: str, node: str) -> Workload:
        return Workload(
            uid=f"Kubernetes//Pod/shop/{name}",
            name=name,
            namespace="shop",
            addresses=(ipaddress.ip_address(addr),),
            service_account=name.split("-")[0],
            node=node,
            tunnel_protocol=TunnelProtocol.HBONE,
            workload_name=name,
            canonical_name=name,
            canonical_revision="v1",
        )

    return [pod("web-0", WEB_IP, "node-1"), pod("orders-0", ORDERS_IP, "node-2")]


async def serve_ztunnel(ca_dir: Path) -> None:
    """The ztunnel of node-2, serving orders-0's HBONE listener until stdin closes."""
    import ambient
    from ambient.identity.ca import CertificateAuthority
    from ambient.identity.manager import CertificateManager
    from ambient.ztunnel.proxy import Ztunnel

    try:
        from ambient.state.proxy import ProxyState
    except ImportError:  # a baseline tree from before ambient.state
        from ambient.ztunnel.state import ProxyState  # type: ignore[no-redef]

    ca = CertificateAuthority.load_or_create(ca_dir, trust_domain="cluster.local")

    async def sign(identity: Any, csr: bytes) -> tuple[bytes, bytes]:
        return ca.sign_csr(csr, identity), ca.roots_pem()

    logging.basicConfig(  # as `ambient up` runs a ztunnel: INFO, to its log file
        level=logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s  %(message)s",
        filename=str(ca_dir.parent / "ztunnel.log"),
    )
    manager = CertificateManager(sign)
    state = ProxyState("node-2")
    state.apply(workloads(), [])
    ztunnel = Ztunnel("node-2", NODE_IP, state, manager, ports=(0, 0, 0))
    await ztunnel.start()
    print(f"READY {ambient.__file__}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await ztunnel.close()


async def serve_app() -> None:
    """orders-0's application: echo; prints how many connections it accepted per stdin line."""
    accepted = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, ORDERS_IP, APP_PORT, backlog=4096)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(accepted, flush=True)
    server.close()


@dataclass
class Child:
    """A subprocess speaking lines on stdin/stdout."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(cls, *args: str) -> Child:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        child = cls(proc)
        line = child.line()
        if not line.startswith("READY"):
            raise RuntimeError(f"{args}: did not start: {line!r}")
        child.ready = line
        return child

    ready: str = ""

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def tell(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def ask(self, text: str = "") -> str:
        self.tell(text)
        return self.line()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    cpu: float = 0.0
    dials: int = 0
    got: str = "-"
    warm_ms: list[float] = field(default_factory=list)  # stream setup on a warm connection
    fresh_ms: list[float] = field(default_factory=list)  # new connection + stream
    failed_probes: int = 0
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0


class Probe:
    """A legitimate client: tunnels opened one after another while an attack runs."""

    def __init__(self, cert: Any, server_identity: Any) -> None:
        from ambient.hbone.pool import ConnectionPool

        self.cert = cert
        self.identity = server_identity
        self.warm = ConnectionPool(connect_timeout=20)

    async def tunnel(self, pool: Any) -> float:
        from ambient.hbone.messages import ConnectRequest, SocketAddress

        start = time.perf_counter()
        stream = await pool.open_stream(
            source=self.cert,
            destination=SocketAddress.parse(f"{ORDERS_IP}:15008"),
            expected=[self.identity],
            request=ConnectRequest(SocketAddress.parse(f"{ORDERS_IP}:{APP_PORT}")),
        )
        stream.write(b"x")
        assert await stream.read(1) == b"x"
        elapsed = (time.perf_counter() - start) * 1000
        stream.write_eof()
        while await stream.read():  # a clean close: the app closes after our EOF
            pass
        return elapsed

    async def run(self, out: Outcome, stop: asyncio.Event) -> None:
        from ambient.hbone.pool import ConnectionPool

        fresh_turn = False
        while not stop.is_set():
            try:
                async with asyncio.timeout(20):
                    if fresh_turn:
                        pool = ConnectionPool(connect_timeout=20)
                        try:
                            out.fresh_ms.append(await self.tunnel(pool))
                        finally:
                            await pool.close()
                    else:
                        out.warm_ms.append(await self.tunnel(self.warm))
            except Exception:
                out.failed_probes += 1
            fresh_turn = not fresh_turn
            await asyncio.sleep(0.01)


async def until_idle(zt: Child, *, quiet: float = 0.5, limit: float = 60.0) -> None:
    """Wait until the ztunnel has used no CPU for ``quiet`` seconds (at most ``limit``)."""
    deadline = time.monotonic() + limit
    last, still_since = zt.cpu(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = zt.cpu()
        if now > last + 0.01:  # one clock tick is noise
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return


Attack = Callable[[Any, "Child"], Awaitable[str]]


async def cost(zt: Child, app: Child, cert: Any, attack: Attack, out: Outcome) -> float:
    """The attack alone: CPU until the ztunnel is idle again, dials, RSS; returns how long
    the ztunnel was busy (seconds)."""
    await until_idle(zt)
    out.rss_before = out.rss_peak = zt.rss_mb()
    dials_before = int(app.ask())
    cpu_before = zt.cpu()
    started = time.monotonic()
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            out.rss_peak = max(out.rss_peak, zt.rss_mb())
            await asyncio.sleep(0.05)

    sampling = asyncio.ensure_future(sample())
    out.got = await attack(cert, zt)
    await until_idle(zt)
    busy = time.monotonic() - started - 0.5  # (until_idle's quiet window)
    out.cpu = zt.cpu() - cpu_before
    stop.set()
    await sampling
    await asyncio.sleep(1.0)  # the attacker is gone: let the ztunnel free what it held
    out.rss_after = zt.rss_mb()
    out.dials = int(app.ask()) - dials_before
    return busy


async def latency(
    zt: Child, ca_dir: Path, attack: Attack, cert: Any, busy: float, out: Outcome
) -> None:
    """The same attack again, while a legitimate client (its own process, so that the
    attacker's work does not delay it) opens tunnels, for as long as the attack kept the
    ztunnel busy before (at least a second)."""
    probe = Child.start("--probe", "--ca", str(ca_dir))
    try:
        await until_idle(zt)
        probe.tell("start")
        started = time.monotonic()
        await attack(cert, zt)
        await asyncio.sleep(max(0.0, max(busy, 1.0) - (time.monotonic() - started)))
        result = json.loads(probe.ask("stop"))
    finally:
        probe.stop()
    out.warm_ms, out.fresh_ms, out.failed_probes = result["warm"], result["fresh"], result["failed"]


async def serve_probe(ca_dir: Path) -> None:
    """The legitimate client: a warm connection first, then tunnels between start and stop."""
    from ambient.identity.ca import CertificateAuthority
    from ambient.identity.spiffe import SpiffeId

    ca = CertificateAuthority.load_or_create(ca_dir, trust_domain="cluster.local")
    cert = ca.issue(SpiffeId.workload("shop", "web"), timedelta(hours=1))
    probe = Probe(cert, SpiffeId.workload("shop", "orders"))
    await probe.tunnel(probe.warm)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # start
    out = Outcome()
    stop = asyncio.Event()
    probing = asyncio.ensure_future(probe.run(out, stop))
    await loop.run_in_executor(None, sys.stdin.readline)  # stop
    stop.set()
    await probing
    print(json.dumps({"warm": out.warm_ms, "fresh": out.fresh_ms, "failed": out.failed_probes}))
    sys.stdout.flush()
    await probe.warm.close()
    await loop.run_in_executor(None, sys.stdin.read)


# -- the attacks ---------------------------------------------------------------------------------


async def rapid_reset(cert: Any, zt: Child, pairs: int) -> str:
    from tests.h2attack import RawH2

    raw = await RawH2.connect(ORDERS_IP, 15008, cert)
    for sid in range(1, 2 * pairs, 2):
        raw.connect_headers(sid, f"{ORDERS_IP}:{APP_PORT}")
        raw.rst(sid)
    raw.write_nowait()
    goaway = asyncio.ensure_future(raw.goaway())
    idle = asyncio.ensure_future(until_idle(zt))
    await asyncio.wait([goaway, idle], return_when=asyncio.FIRST_COMPLETED)
    idle.cancel()
    frame = goaway.result() if goaway.done() else None
    goaway.cancel()
    raw.close()
    return f"GOAWAY {frame.goaway_code:#x}" if frame else "no GOAWAY"


async def flood(cert: Any, zt: Child, kind: str, seconds: float) -> str:
    from tests.h2attack import RawH2

    raw = await RawH2.connect(ORDERS_IP, 15008, cert, rcvbuf=4096)
    for _ in range(1000):
        raw.ping() if kind == "ping" else raw.settings()
    batch = raw.take()
    end = time.monotonic() + seconds
    blocked = False
    while time.monotonic() < end and not raw.writer.transport.is_closing():
        raw.writer.write(batch)
        try:
            async with asyncio.timeout(max(0.0, end - time.monotonic())):
                await raw.writer.drain()
        except TimeoutError:
            blocked = True  # the ztunnel stopped reading
            break
        except (ConnectionError, OSError):
            break
    # The replies the attacker did not read, up to a GOAWAY (our 4 KiB receive buffer
    # holds a few hundred of them; the server's send buffer the rest).
    try:
        async with asyncio.timeout(3):
            frame = await raw.goaway()
    except TimeoutError:  # still open: only replies in the buffers
        raw.close()
        return "no GOAWAY; the server stopped reading" if blocked else "no GOAWAY"
    raw.close()
    if frame is not None:
        return f"GOAWAY {frame.goaway_code:#x}"
    # Reset before the attacker read that far: its unread replies (and the GOAWAY after
    # them) are discarded by its own kernel.
    return "connection dropped (GOAWAY unread)"


async def quiet(cert: Any, zt: Child) -> str:
    """No attack: the reference for the legitimate tunnels' latency on this machine."""
    await asyncio.sleep(1.0)
    return "-"


async def continuation(cert: Any, zt: Child, connections: int) -> str:
    from tests.h2attack import RawH2

    frame = (1024 * 1024).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big")
    payload = b"\0" * (1024 * 1024)
    peers = [await RawH2.connect(ORDERS_IP, 15008, cert) for _ in range(connections)]
    for raw in peers:
        raw.headers_without_end(1, raw.header_block([(":method", "CONNECT")]))
        await raw.flush()
        for _ in range(63):
            raw.writer.write(frame + payload)
            try:
                async with asyncio.timeout(5):
                    await raw.writer.drain()
            except (TimeoutError, ConnectionError, OSError):
                break
            if raw.writer.transport.is_closing():
                break
    await asyncio.sleep(1.0)  # held open: what the ztunnel buffers now is the peak
    answered = 0
    for raw in peers:
        try:
            async with asyncio.timeout(1):
                goaway = await raw.goaway()
        except TimeoutError:
            goaway = None
        answered += goaway is not None and goaway.goaway_code == 0xB
        raw.close()
    return f"GOAWAY 0xb on {answered} of {connections}" if answered else "no GOAWAY"


# -- the run --------------------------------------------------------------------------------------


def export_tree(ref: str, into: Path) -> Path:
    """``src/`` of ``ref``, exported to ``into`` (returns the src folder)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


async def scenario(
    name: str, trees: dict[str, Path], ca_dir: Path, app: Child, attack: Attack
) -> dict[str, Outcome]:
    from ambient.identity.ca import CertificateAuthority
    from ambient.identity.spiffe import SpiffeId

    ca = CertificateAuthority.load_or_create(ca_dir, trust_domain="cluster.local")
    cert = ca.issue(SpiffeId.workload("shop", "web"), timedelta(hours=1))
    results: dict[str, Outcome] = {}
    for label, src in trees.items():
        out = results[label] = Outcome()
        for phase in ("cost", "latency"):  # each on a fresh ztunnel
            zt = Child.start("--serve", "--src", str(src), "--ca", str(ca_dir))
            try:
                if phase == "cost":
                    busy = await cost(zt, app, cert, attack, out)
                else:
                    await latency(zt, ca_dir, attack, cert, busy, out)
            finally:
                zt.stop()
        print(f"  {name} [{label}] done", file=sys.stderr, flush=True)
    return results


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def report(results: dict[str, dict[str, Outcome]]) -> None:
    print("| scenario | code | ztunnel CPU (s) | app dials | attacker got | "
          "warm tunnel p50 / max (ms) | new connection p50 / max (ms) | failed probes | "
          "RSS before / peak / after (MB) |")  # fmt: skip
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for name, by_tree in results.items():
        for label, o in by_tree.items():
            warm = f"{pct(o.warm_ms, 0.5)} / {pct(o.warm_ms, 1.0)}"
            fresh = f"{pct(o.fresh_ms, 0.5)} / {pct(o.fresh_ms, 1.0)}"
            rss = f"{o.rss_before:.0f} / {o.rss_peak:.0f} / {o.rss_after:.0f}"
            cpu = f"{o.cpu:.2f}" if o.cpu >= 0.01 else "< 0.01"
            print(f"| {name} | {label} | {cpu} | {o.dials:,} | {o.got} | {warm} | "
                  f"{fresh} | {o.failed_probes} | {rss} |")  # fmt: skip
        if {"before", "after"} <= by_tree.keys() and by_tree["before"].cpu >= 0.01:
            after = max(by_tree["after"].cpu, 0.01)  # /proc counts in 10 ms ticks
            ratio = by_tree["before"].cpu / after
            more = "≥ " if by_tree["after"].cpu < 0.01 else ""
            print(f"|  | ratio before/after CPU: {more}{ratio:.0f}x | | | | | | | |")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="h2abuse-") as tmp:
        trees = {"before": export_tree(args.baseline_ref, Path(tmp)), "after": ROOT / "src"}
        ca_dir = Path(tmp) / "ca"
        from ambient.identity.ca import CertificateAuthority

        CertificateAuthority.load_or_create(ca_dir, trust_domain="cluster.local")
        app = Child.start("--app")
        scenarios: dict[str, Attack] = {
            "no attack (reference)": quiet,
            f"rapid reset ({args.pairs:,} pairs)": lambda c, z: rapid_reset(c, z, args.pairs),
            f"SETTINGS flood ({args.flood_seconds:g} s)": lambda c, z: flood(
                c, z, "settings", args.flood_seconds
            ),
            f"PING flood ({args.flood_seconds:g} s)": lambda c, z: flood(
                c, z, "ping", args.flood_seconds
            ),
            "CONTINUATION (6 connections)": lambda c, z: continuation(c, z, 6),
        }
        results = {}
        try:
            for name, attack in scenarios.items():
                if args.only and args.only not in name:
                    continue
                results[name] = await scenario(name, trees, ca_dir, app, attack)
        finally:
            app.stop()
        report(results)
        if args.json:
            print(json.dumps({n: {k: vars(v) for k, v in r.items()} for n, r in results.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runner: Callable[[Any], Any]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    if args.serve:
        runner(serve_ztunnel(Path(args.ca)))
    elif args.app:
        runner(serve_app())
    elif args.probe:
        runner(serve_probe(Path(args.ca)))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
