"""A WebSocket echo server and client on the ``websockets`` package (a peer we did not write).

    python3 wsecho.py serve [--port 8765]          # on $POD_IP: greets, then echoes
    python3 wsecho.py call ws://HOST:PORT/PATH N    # N messages; prints the outcome as JSON

The server first sends ``hello from <pod> <path>``, then echoes every message.
The client sends N messages of growing sizes (up to 1 MiB) and checks each
echo; it prints ``{"greeting", "echoed", "ok"}`` or ``{"error"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os

import websockets
import websockets.asyncio.client
import websockets.asyncio.server


async def serve(port: int) -> None:
    name = os.environ.get("POD_NAME", "wsecho")

    async def handler(connection: websockets.asyncio.server.ServerConnection) -> None:
        path = connection.request.path if connection.request else "?"
        await connection.send(f"hello from {name} {path}")
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in connection:
                await connection.send(message)

    host = os.environ.get("POD_IP", "127.0.0.1")
    async with websockets.asyncio.server.serve(handler, host, port, max_size=None):
        print(f"wsecho {name} on {host}:{port}", flush=True)
        await asyncio.Future()


async def call(url: str, count: int) -> dict[str, object]:
    try:
        async with websockets.asyncio.client.connect(url, max_size=None) as ws:
            greeting = await ws.recv()
            echoed = 0
            for i in range(count):
                message = os.urandom(min(1 << (i + 4), 1 << 20))
                await ws.send(message)
                if await ws.recv() != message:
                    return {"greeting": greeting, "echoed": echoed, "ok": False}
                echoed += 1
            return {"greeting": greeting, "echoed": echoed, "ok": True}
    except (OSError, websockets.WebSocketException) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve")
    serving.add_argument("--port", type=int, default=8765)
    calling = sub.add_parser("call")
    calling.add_argument("url")
    calling.add_argument("count", type=int)
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args.port))
    else:
        print(json.dumps(asyncio.run(call(args.url, args.count))))


if __name__ == "__main__":
    main()
