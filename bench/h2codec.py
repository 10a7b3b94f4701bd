"""The waypoint's two sans-io HTTP/2 codecs alone: CPU per unary gRPC exchange through both.

    .venv/bin/python bench/h2codec.py [--baseline REV] [--rounds 15] [--exchanges 3000]

An ``h2client.H2Client`` (the waypoint's upstream side) and an
``h2server.H2Server`` (its downstream side) wired back to back in memory (no
sockets, no event loop), one connection, as a unary gRPC call crosses them: the
request head and 1 KiB of DATA, the response head, 1 KiB and trailers, both
sides acknowledging what they received. The figure is CPU time per exchange
(both codecs' work), best of ``--rounds``, as other load on the machine only
ever makes a round slower.

``--baseline REV``: the same measurement of the codecs as they were at git
revision ``REV`` (its ``src`` exported to a temporary folder), round for round
alternating with the working tree's, each round a fresh process, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REQUEST = [
    (":method", "POST"), (":scheme", "http"), (":authority", "echo:50051"),
    (":path", "/echo.Echo/Call"), ("content-type", "application/grpc"), ("te", "trailers"),
    ("user-agent", "grpc-python/1.68.1 grpc-c/44.0.0 (linux; chttp2)"),
]  # fmt: skip
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0"), ("grpc-message", "")]
MESSAGE = bytes(5 + 1024)  # a gRPC message frame of 1 KiB


def child(exchanges: int) -> float:
    """CPU µs per exchange, with the codecs importable here (``PYTHONPATH``)."""
    from ambient.http2.events import DataReceived
    from ambient.waypoint.proxy.h2client import H2Client
    from ambient.waypoint.proxy.h2server import H2Server

    client = H2Client(1 << 20, 16 << 20)
    server = H2Server(
        stream_window=1 << 20, connection_window=16 << 20, max_streams=100, max_header_list=65536
    )
    client.initiate()
    server.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    start = time.process_time()
    for _ in range(exchanges):
        stream_id = client.open_stream()
        client.send_headers(stream_id, REQUEST, False)
        client.send_data(stream_id, MESSAGE, True)
        for event in server.receive_data(client.data_to_send()):
            if isinstance(event, DataReceived):
                server.acknowledge(event.stream_id, event.flow)
        server.send_headers(stream_id, RESPONSE, False)
        server.window(stream_id)
        server.send_data(stream_id, MESSAGE)
        server.send_headers(stream_id, TRAILERS, True)
        for event in client.receive_data(server.data_to_send()):
            if isinstance(event, DataReceived):
                client.acknowledge(event.stream_id, event.flow)
        client.forget(stream_id)
        server.receive_data(client.data_to_send())
    return (time.process_time() - start) / exchanges * 1e6


def round_of(src: Path, exchanges: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--exchanges", str(exchanges)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", metavar="REV", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--exchanges", type=int, default=3000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.exchanges))
        return
    with tempfile.TemporaryDirectory(prefix="bench-h2codec-") as tmp:
        sides = {"working tree": ROOT / "src"}
        if args.baseline:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                check=True, capture_output=True,
            ).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            sides = {f"baseline {args.baseline}": Path(tmp) / "src", **sides}
        best = dict.fromkeys(sides, float("inf"))
        for _ in range(args.rounds):
            for name, src in sides.items():
                best[name] = min(best[name], round_of(src, args.exchanges))
    print(f"CPU per unary gRPC exchange through both codecs, best of {args.rounds} rounds")
    for name, value in best.items():
        print(f"  {name:24s} {value:7.2f} us")
    if args.baseline:
        base, now = best.values()
        print(f"  ratio working tree / baseline: {now / base:.3f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
