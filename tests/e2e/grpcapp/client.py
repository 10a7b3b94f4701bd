"""A grpcio client of ``grpcapp.Echo`` for end-to-end tests: one call, its outcome as JSON.

    python3 client.py TARGET CALL [ARG...] [--header NAME=VALUE]... [--timeout S]

``TARGET`` is ``host:port`` (a mesh name: the channel resolves it, or hands it
to an HTTP CONNECT proxy when ``grpc_proxy``/``https_proxy`` is set, as grpc
core does). Calls:

- ``unary MESSAGE``: ``{"code", "reply", "initial", "trailing"}``;
- ``server-stream COUNT SIZE`` / ``client-stream COUNT SIZE`` / ``bidi COUNT``:
  ``{"code", "messages", "bytes"}``;
- ``download BYTES``: server streaming of 64 KiB messages, ``{"code", "bytes",
  "seconds"}``;
- ``sleep MS``: ``{"code", "details"}`` (with ``--timeout``, a deadline);
- ``stats``: the server's counters.

A failed call prints ``{"code": "<STATUS>", "details": ...}`` and exits 0: the
test judges the status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc

MESSAGE = 64 * 1024
OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]


def _method(name: str) -> str:
    return f"/grpcapp.Echo/{name}"


def _pairs(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


def run(channel: grpc.Channel, call: str, args: list[str], metadata: list[tuple[str, str]],
        timeout: float | None) -> dict[str, Any]:  # fmt: skip
    if call == "unary":
        reply, outcome = channel.unary_unary(_method("Unary")).with_call(
            args[0].encode(), metadata=metadata, timeout=timeout
        )
        return {
            "code": outcome.code().name,
            "reply": reply.decode(),
            "initial": _pairs(outcome.initial_metadata()),
            "trailing": _pairs(outcome.trailing_metadata()),
        }
    if call == "server-stream":
        stream = channel.unary_stream(_method("ServerStream"))(
            f"{args[0]},{args[1]}".encode(), metadata=metadata, timeout=timeout
        )
        sizes: list[int] = [len(m) for m in stream]
        return {"code": stream.code().name, "messages": len(sizes), "bytes": sum(sizes)}
    if call == "client-stream":
        count, size = int(args[0]), int(args[1])

        def upload() -> Iterator[bytes]:
            for _ in range(count):
                yield b"c" * size

        total = channel.stream_unary(_method("ClientStream"))(
            upload(), metadata=metadata, timeout=timeout
        )
        return {"code": "OK", "messages": count, "bytes": int(total)}
    if call == "bidi":
        count = int(args[0])
        replies = channel.stream_stream(_method("Bidi"))(
            (f"m{i}".encode() for i in range(count)), metadata=metadata, timeout=timeout
        )
        received = [r.decode() for r in replies]
        ok = received == [f"m{i}" for i in range(count)]
        return {"code": replies.code().name if ok else "MISMATCH", "messages": len(received)}
    if call == "download":
        total = int(args[0])
        started = time.monotonic()
        stream = channel.unary_stream(_method("ServerStream"))(
            f"{total // MESSAGE},{MESSAGE}".encode(), metadata=metadata, timeout=timeout
        )
        total_bytes = sum(len(m) for m in stream)
        return {"code": stream.code().name, "bytes": total_bytes,
                "seconds": time.monotonic() - started}  # fmt: skip
    if call == "sleep":
        reply = channel.unary_unary(_method("Sleep"))(
            args[0].encode(), metadata=metadata, timeout=timeout
        )
        return {"code": "OK", "reply": reply.decode()}
    if call == "stats":
        return {"code": "OK", "reply": channel.unary_unary(_method("Stats"))(b"").decode()}
    raise SystemExit(f"unknown call {call!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target")
    parser.add_argument("call")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--timeout", type=float)
    ns = parser.parse_args()
    metadata = [tuple(h.split("=", 1)) for h in ns.header]
    with grpc.insecure_channel(ns.target, options=OPTIONS) as channel:
        try:
            result = run(channel, ns.call, ns.args, metadata, ns.timeout)
        except grpc.RpcError as exc:
            result = {"code": exc.code().name, "details": exc.details()}
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
