"""A small asyncio HTTP/1.1 server (h11) for admin, metrics and readiness endpoints.

Routes map a path to a function returning (status, content type, body). Only
GET and HEAD; one request per connection is enough for these endpoints but
keep-alive is honoured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import h11

log = logging.getLogger("ambient.httpd")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[str], Response]  # receives the query string


class AdminServer:
    """Serves ``routes`` on one address."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), 30)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    target = event.target.decode("ascii", "replace")
                    path, _, query = target.partition("?")
                    response = self._respond(event.method.decode(), path, query)
                    headers = [
                        ("content-type", response.content_type),
                        ("content-length", str(len(response.body))),
                    ]
                    writer.write(
                        conn.send(h11.Response(status_code=response.status, headers=headers))
                    )
                    if event.method != b"HEAD":
                        writer.write(conn.send(h11.Data(data=response.body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                elif isinstance(event, h11.EndOfMessage):
                    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                        conn.start_next_cycle()
                else:  # ConnectionClosed, Data of a body we ignore, PAUSED
                    if (
                        isinstance(event, h11.ConnectionClosed)
                        or conn.their_state is h11.MUST_CLOSE
                    ):
                        break
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _respond(self, method: str, path: str, query: str) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n")
        handler = self.routes.get(path)
        if handler is None:
            known = "\n".join(sorted(self.routes))
            return Response(404, f"no such endpoint {path}; try:\n{known}\n".encode())
        try:
            return handler(query)
        except Exception as exc:  # an admin page must never take the proxy down
            log.warning("admin endpoint %s failed: %s", path, exc)
            return Response(500, f"{type(exc).__name__}: {exc}\n".encode())
