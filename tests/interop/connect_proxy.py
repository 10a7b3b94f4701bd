"""Tiny HTTP/1.1 CONNECT proxy: the backend of nghttpx when nghttpx plays HBONE server.

nghttpx (-s) never dials a CONNECT target itself; it forwards the CONNECT to its
backend. This proxy dials the target, answers 200 (or 400/503 like HBONE), then
relays bytes with half-close. Prints ``LISTENING host:port`` when ready and one
``CONNECT authority=... forwarded=... status=...`` line per request on stderr.

Usage: python connect_proxy.py [--listen 127.0.0.1:0] [--allow-prefix 127.]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # propagate half-close


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, allow: tuple[str, ...]
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        method, authority, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
        }
        host, _, port = authority.rpartition(":")
        status, upstream = 200, None
        if method != "CONNECT" or not port.isdigit() or not host.startswith(allow):
            status = 400
        else:
            try:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 5
                )
            except (OSError, TimeoutError):
                status = 503
        print(
            f"CONNECT authority={authority} forwarded={headers.get('forwarded', '-')!r} "
            f"status={status} headers={headers!r}",
            file=sys.stderr,
            flush=True,
        )
        reason = {200: "OK", 400: "Bad Request", 503: "Service Unavailable"}[status]
        extra = "" if status == 200 else "Content-Length: 0\r\nConnection: close\r\n"
        writer.write(f"HTTP/1.1 {status} {reason}\r\n{extra}\r\n".encode())
        await writer.drain()
        if upstream is not None:
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
    except (
        OSError,
        ValueError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        TimeoutError,
    ):
        pass
    finally:
        writer.close()


async def _main(listen: str, allow: tuple[str, ...]) -> None:
    host, _, port = listen.rpartition(":")
    server = await asyncio.start_server(lambda r, w: _handle(r, w, allow), host, int(port))
    bound = server.sockets[0].getsockname()
    print(f"LISTENING {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument(
        "--allow-prefix", action="append", default=None, help="allowed target host prefixes"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.listen, tuple(args.allow_prefix or ["127."])))


if __name__ == "__main__":
    main()
