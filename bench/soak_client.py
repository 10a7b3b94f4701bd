"""The load of ``bench/soak.py``, run inside a pod (``ambient exec``).

    python soak_client.py --mode l4|h1|h2 --target HOST:PORT [--path /api/items]
                          [--requests 10000] [--concurrency 16] [--streams 10]

``l4``: every request on a new TCP connection (``Connection: close``), so each
one is a new proxied connection (an HBONE stream). ``h1``: ``--concurrency``
keep-alive HTTP/1.1 connections share the requests. ``h2``: ``--concurrency``
HTTP/2 connections (prior knowledge, h2c) with up to ``--streams`` requests in
flight on each, as ``h2load -c C -m S`` does (this mode needs the ``h2``
package: run it with the project's Python; the others use the standard
library only). The pod's
outbound goes through its ztunnel: by SOCKS5 when ``ALL_PROXY`` names one (the
local process mode; the connection to it is made from ``POD_IP``), else by plain
TCP (``--netns`` captures it). Prints one JSON line: ok, failed, seconds, and the
first few errors. Every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import time
from urllib.parse import urlsplit


class Failure(Exception):
    pass


def _socks_proxy() -> tuple[str, int] | None:
    proxy = os.environ.get("ALL_PROXY", "")
    if not proxy.startswith("socks5"):
        return None
    parts = urlsplit(proxy)
    return parts.hostname or "127.0.0.1", parts.port or 1080


async def _open(
    host: str, port: int, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    proxy = _socks_proxy()
    if proxy is None:
        return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    local = os.environ.get("POD_IP")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*proxy, local_addr=(local, 0) if local else None), timeout
    )
    try:
        ipaddress.IPv4Address(host)
        address = b"\x01" + socket.inet_aton(host)
    except ValueError:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    writer.write(b"\x05\x01\x00" + b"\x05\x01\x00" + address + port.to_bytes(2, "big"))
    reply = await asyncio.wait_for(reader.readexactly(2 + 4), timeout)
    if reply[:2] != b"\x05\x00" or reply[3] != 0:
        writer.close()
        raise Failure(f"SOCKS5 refused: {reply.hex()}")
    kind = reply[5]
    rest = {1: 4, 4: 16}.get(kind)
    if rest is None:
        rest = (await reader.readexactly(1))[0]
    await asyncio.wait_for(reader.readexactly(rest + 2), timeout)
    return reader, writer


async def _response(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Read one response; True if the connection stays open."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise Failure(f"status {lines[0]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = headers.get("content-length")
    if length is None:
        await asyncio.wait_for(reader.read(), timeout)
        return False
    await asyncio.wait_for(reader.readexactly(int(length)), timeout)
    return headers.get("connection", "").lower() != "close"


def _request(host: str, path: str, close: bool) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


class Load:
    """The shared request budget and tallies of one run's workers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host, _, port_text = args.target.rpartition(":")
        self.port = int(port_text)
        self.left = args.requests
        self.ok = self.failed = 0
        self.errors: list[str] = []

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def fail(self, exc: BaseException) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def h2_worker(self) -> None:
        """Connections one after another, each with up to ``--streams`` requests in flight."""
        while self.left > 0:
            writer = None
            status: dict[int, str] = {}  # requests in flight: stream id -> :status
            sent = [0]
            try:
                reader, writer = await _open(self.host, self.port, self.args.timeout)
                await self._h2_connection(reader, writer, status, sent)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, Failure) as exc:
                if not sent[0] and self.take():  # a connection that carried nothing costs one
                    status[0] = ""
                for _ in status:
                    self.fail(exc)
            finally:
                if writer is not None:
                    writer.close()

    async def _h2_connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: dict[int, str],
        sent: list[int],
    ) -> None:
        """One connection's requests; ``status`` holds those in flight, ``sent`` counts."""
        import h2.config
        import h2.connection
        import h2.events

        args = self.args
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        alive = True
        while alive and (status or self.left > 0):
            while alive and len(status) < args.streams and self.take():
                sid = conn.get_next_available_stream_id()
                head = [(":method", "GET"), (":scheme", "http")]
                head += [(":authority", self.host), (":path", args.path)]
                conn.send_headers(sid, head, end_stream=True)
                status[sid] = ""
                sent[0] += 1
            writer.write(conn.data_to_send())
            data = await asyncio.wait_for(reader.read(65536), args.timeout)
            if not data:
                raise Failure("connection closed with requests in flight")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status[event.stream_id] = dict(event.headers).get(":status", "")
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    code = status.pop(event.stream_id, "")
                    if code == "200":
                        self.ok += 1
                    else:
                        self.fail(Failure(f"status {code!r}"))
                elif isinstance(event, h2.events.StreamReset):
                    status.pop(event.stream_id, None)
                    self.fail(Failure(f"stream reset ({event.error_code!r})"))
                elif isinstance(event, h2.events.ConnectionTerminated):
                    alive = False
        if status:
            raise Failure("GOAWAY with requests in flight")
        conn.close_connection()
        writer.write(conn.data_to_send())

    async def l4_worker(self) -> None:
        """A new connection per request."""
        while self.take():
            writer = None
            try:
                reader, writer = await _open(self.host, self.port, self.args.timeout)
                writer.write(_request(self.host, self.args.path, close=True))
                await _response(reader, self.args.timeout)
                self.ok += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError, Failure) as exc:
                self.fail(exc)
            finally:
                if writer is not None:
                    writer.close()

    async def http_worker(self) -> None:
        """HTTP/1.1 keep-alive: one connection for as long as the server keeps it."""
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while self.take():
            try:
                if conn is None:
                    conn = await _open(self.host, self.port, self.args.timeout)
                reader, writer = conn
                writer.write(_request(self.host, self.args.path, close=False))
                if not await _response(reader, self.args.timeout):
                    writer.close()
                    conn = None
                self.ok += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError, Failure) as exc:
                self.fail(exc)
                if conn is not None:
                    conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    load = Load(args)
    worker = {"l4": load.l4_worker, "h1": load.http_worker, "h2": load.h2_worker}[args.mode]
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {
        "ok": load.ok,
        "failed": load.failed,
        "seconds": round(time.monotonic() - started, 2),
        "errors": load.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("l4", "h1", "h2"), required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--path", default="/api/items")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--streams", type=int, default=10, help="h2: requests in flight")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
