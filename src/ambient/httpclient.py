"""The client side of ``httpd``: one JSON request over HTTP/1.1, on a Unix socket or TCP.

For the mesh's own control channels (the control plane's API socket, the node
agent's socket, a ztunnel's admin port): one request per connection, the answer
read to its end, everything under one timeout.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["http_json", "unix_request"]


async def unix_request(
    path: str, method: str, target: str, body: Any = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """One HTTP/1.1 request over a Unix socket; returns (status, decoded JSON body).

    Raises OSError if the socket cannot be reached or the answer is not JSON.
    """

    async def call() -> tuple[int, Any]:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            head = (
                f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        header, _, content = data.partition(b"\r\n\r\n")
        try:
            status = int(header.split(b" ", 2)[1])
            return status, json.loads(content)
        except (IndexError, ValueError) as exc:
            raise OSError(f"bad answer from {path}: {data[:200]!r}") from exc

    return await asyncio.wait_for(call(), timeout)


async def http_json(host: str, port: int, target: str, timeout: float = 5.0) -> Any:
    """GET ``http://host:port/target`` (a ztunnel's admin endpoint) as JSON; OSError if not."""

    async def call() -> Any:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        header, _, content = data.partition(b"\r\n\r\n")
        if not header.startswith(b"HTTP/1.1 200"):
            raise OSError(f"{host}:{port}{target} answered {header[:60]!r}")
        return json.loads(content)

    return await asyncio.wait_for(call(), timeout)
