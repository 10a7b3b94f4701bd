"""What tracing costs the waypoint: CPU per request with spans sampled at 100 %, 1 %, and off.

    .venv/bin/python bench/waypoint_tracing.py [--seconds 5] [--rate 1000] [--rounds 3]

The processes and the load are ``bench/waypoint.py``'s (1 KiB HTTP/1.1 requests
through source -> waypoint -> destination ztunnel -> server, ``--rate`` req/s over
16 keep-alive connections). For each round the waypoint is started three times:
without tracing, and with a tracer sampling 1 % and 100 % that exports OTLP/HTTP
protobuf to a receiver in this process (which answers 200 and counts the spans);
requests carry no trace context, so the waypoint decides. Rounds interleave the
three so the machine's drift hits them alike; the table shows the median of the
rounds, the waypoint's CPU time per request (its process's user+system time over
the paced run, divided by the requests), the latency, and the cost added by
tracing against "off" measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

import waypoint as bench  # noqa: E402
from ambient.identity.ca import CertificateAuthority  # noqa: E402

MODES = (("off", None), ("1 %", "1"), ("100 %", "100"))


class Receiver:
    """A minimal OTLP/HTTP endpoint: reads each POST, answers 200, counts the bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                self.requests += 1
                self.bytes += length
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def run(args: argparse.Namespace, ca_dir: Path) -> dict[str, list[dict[str, float]]]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    os.environ["BENCH_OTLP"] = str(server.sockets[0].getsockname()[1])
    others = {
        role: bench.spawn("--role", role, "--ca", str(ca_dir))
        for role in ("ztunnel", "server", "source")
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in MODES}
    try:
        for _ in range(args.rounds):
            for name, sampling in MODES:
                if sampling is None:
                    os.environ.pop("BENCH_TRACING", None)
                else:
                    os.environ["BENCH_TRACING"] = sampling
                waypoint = bench.spawn("--role", "waypoint", "--ca", str(ca_dir))
                try:
                    result = await bench.paced(
                        bench.ENTRY_L7, args.rate, args.seconds, args.connections, waypoint.pid
                    )
                finally:
                    assert waypoint.stdin is not None
                    waypoint.stdin.close()
                    await asyncio.to_thread(waypoint.wait, 30)
                results[name].append(result)
    finally:
        for proc in others.values():
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in others.values():
            proc.wait(timeout=30)
        server.close()
    print(f"OTLP receiver: {receiver.requests} export requests, {receiver.bytes} bytes")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bench.configure("http")
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        CertificateAuthority.load_or_create(Path(tmp))
        results = uvloop.run(run(args, Path(tmp)))
    per_request = {
        name: statistics.median(r["cpu"] / r["rate"] * 1e6 for r in rounds)
        for name, rounds in results.items()
    }
    base = per_request["off"]
    print(f"HTTP/1.1, 1 KiB each way, {args.rate:g} req/s, median of {args.rounds} rounds")
    print(f"{'tracing':<10} {'CPU/request (us)':>17} {'added (us)':>11} {'ratio':>7} "
          f"{'p50 (ms)':>9} {'p99 (ms)':>9} {'rate':>8}")  # fmt: skip
    for name, rounds in results.items():
        p50 = statistics.median(r["p50_ms"] for r in rounds)
        p99 = statistics.median(r["p99_ms"] for r in rounds)
        rate = statistics.median(r["rate"] for r in rounds)
        cost = per_request[name]
        print(f"{name:<10} {cost:>17.0f} {cost - base:>11.0f} {cost / base:>6.2f}x "
              f"{p50:>9.2f} {p99:>9.2f} {rate:>8.0f}")  # fmt: skip
    print(f"load average after the runs: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
