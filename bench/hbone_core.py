"""The sans-io HBONE core alone: CPU per stream and per byte, against another tree's.

    .venv/bin/python bench/hbone_core.py [--baseline REV] [--rounds 5]

A client and a server :class:`HboneConnection` wired back to back in memory (no
TLS, no sockets, no event loop), so the figures are the protocol work only, per
side pair. ``--baseline REV``: the same measurement of ``src`` as it was at git
revision REV (``git archive``), each round in a fresh process, alternating with the
working tree's. Measures:

- stream lifecycle: CONNECT with ``forwarded``, 200, one byte each way, both
  END_STREAMs (what every new mesh connection costs the two ztunnels' HTTP/2);
- 1 KiB request/response on an open stream;
- bulk: 64 MiB one way in 256 KiB writes, delivered in 64 KiB reads.

Best of ``--rounds`` alternating rounds (CPU time of this process), as other
load on the machine only ever makes a round slower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The core under test may come from another tree (--src): it must win over ours.
sys.path.insert(
    0, sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else str(ROOT / "src")
)

from ambient.hbone import events as ev  # noqa: E402
from ambient.hbone.messages import ConnectRequest, SocketAddress  # noqa: E402
from ambient.hbone.protocol import HboneConnection, Side  # noqa: E402

AUTHORITY = SocketAddress.parse("10.0.0.7:8080")
HOST = "server.bench.svc.cluster.local"


class Pair:
    def __init__(self) -> None:
        self.client = HboneConnection(Side.CLIENT)
        self.server = HboneConnection(Side.SERVER)
        for conn in (self.client, self.server):
            conn.initiate()
        self.pump()

    def pump(self, read_size: int = 0) -> tuple[list[ev.Event], list[ev.Event]]:
        at_client: list[ev.Event] = []
        at_server: list[ev.Event] = []
        while True:
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return at_client, at_server
            for data, conn, events in (
                (to_server, self.server, at_server),
                (to_client, self.client, at_client),
            ):
                step = read_size or len(data) or 1
                for i in range(0, len(data), step):
                    events += conn.receive_data(data[i : i + step])


def lifecycle(pair: Pair, i: int) -> None:
    forwarded = SocketAddress.parse(f"10.0.0.1:{30000 + i % 30000}")
    sid = pair.client.open_stream(ConnectRequest(AUTHORITY, forwarded, HOST))
    pair.pump()
    pair.server.respond(sid, 200)
    pair.client.send(sid, b"!")
    pair.pump()
    pair.server.consumed(sid, 1)
    pair.server.send(sid, b"!")
    pair.server.end_stream(sid)
    pair.pump()
    pair.client.consumed(sid, 1)
    pair.client.end_stream(sid)
    pair.pump()


def best(rounds: int, count: int, run: Callable[[int], None]) -> float:
    """Best CPU seconds per iteration over ``rounds``."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for i in range(count):
            run(i)
        times.append((time.process_time() - start) / count)
    return min(times)


def measure(rounds: int) -> dict[str, float]:
    pair = Pair()
    for i in range(200):  # warm up HPACK tables and caches
        lifecycle(pair, i)
    result = {"lifecycle_us": best(rounds, 2000, lambda i: lifecycle(pair, i)) * 1e6}

    sid = pair.client.open_stream(ConnectRequest(AUTHORITY))
    pair.pump()
    pair.server.respond(sid, 200)
    pair.pump()
    message = b"x" * 1024

    def request_response(_: int) -> None:
        pair.client.send(sid, message)
        pair.pump()
        pair.server.consumed(sid, 1024)
        pair.server.send(sid, message)
        pair.pump()
        pair.client.consumed(sid, 1024)

    result["rr_us"] = best(rounds, 5000, request_response) * 1e6
    chunk = b"\0" * (256 * 1024)

    def bulk(_: int) -> None:  # 64 MiB
        for _ in range(256):
            pair.client.send(sid, chunk)
            _, at_server = pair.pump(read_size=64 * 1024)
            for event in at_server:
                if isinstance(event, ev.DataReceived):
                    pair.server.consumed(sid, len(event.data))

    result["bulk_mb_s"] = 64 * 1.048576 / best(rounds, 1, bulk)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", metavar="REV", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(1)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-hbone-core-") as tmp:
        sides = {"working tree": ROOT / "src"}
        if args.baseline:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                check=True, capture_output=True,
            ).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            sides = {f"baseline {args.baseline}": Path(tmp) / "src", **sides}
        # Alternate the sides, a fresh process per round, and keep each one's best round.
        best: dict[str, dict[str, float]] = {name: {} for name in sides}
        for _ in range(args.rounds):
            for name, src in sides.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--src", str(src)],
                    check=True, capture_output=True, text=True,
                ).stdout  # fmt: skip
                for key, value in json.loads(out).items():
                    better = max if key.endswith("_s") else min
                    best[name][key] = better(best[name].get(key, value), value)
    names = list(sides)
    print(f"{'measure (client + server core, CPU)':<40}" + "".join(f"{n:>22}" for n in names))
    for label, key in (
        ("stream lifecycle (µs)", "lifecycle_us"),
        ("1 KiB request/response (µs)", "rr_us"),
        ("bulk, 64 KiB reads (MB/s)", "bulk_mb_s"),
    ):
        row = "".join(f"{best[n][key]:>22.1f}" for n in names)
        ratio = f"  ({best[names[-1]][key] / best[names[0]][key]:.2f}x)" if len(names) > 1 else ""
        print(f"{label:<40}{row}{ratio}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
