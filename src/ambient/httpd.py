"""A small asyncio HTTP/1.1 server (h11) for admin, metrics, readiness and the local control API.

Routes map ``(method, path)`` to a handler that takes a :class:`Request` and
returns a :class:`Response` (or an awaitable of one). It listens on TCP or on
a Unix socket. Request bodies are capped (1 MiB by default).

Open connections are capped too (``max_connections``, 64): anyone on the host
can reach a node's admin and metrics ports, and idle connections would
otherwise hold the proxy's file descriptors for 30 s each. A new connection
beyond the cap closes the oldest one that is waiting for a request (a
scraper's request in progress is never cut); when every one is busy, the
newcomer is closed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import h11

log = logging.getLogger("ambient.httpd")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    body: bytes
    peer: str = ""
    """The client's address (empty on a Unix socket)."""
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` with a clear message."""
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"request body is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()  # more headers, e.g. cache-control

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value, indent=2).encode() + b"\n", "application/json")


Handler = Callable[[Request], Response | Awaitable[Response]]


class AdminServer:
    """Serves ``routes``; a route is a path (GET) or ``"METHOD /path"``."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        max_body: int = 1024 * 1024,
        max_connections: int = 64,
    ) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        for key, handler in routes.items():
            method, _, path = key.partition(" ") if " " in key else ("GET", "", key)
            self.routes[(method, path)] = handler
        self.max_body = max_body
        self.max_connections = max_connections
        # Open connections, oldest first: True while waiting for (more of) a request.
        self.connections: dict[asyncio.StreamWriter, bool] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start_on(self, listener: socket.socket) -> tuple[str, int]:
        """Serve on ``listener``, bound and listening (e.g. made in a pod's network namespace)."""
        self._server = await asyncio.start_server(self._serve, sock=listener)
        sockname = listener.getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start_unix(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Make room for ``writer``; False if every open connection is busy."""
        if len(self.connections) >= self.max_connections:
            waiting = next((w for w, idle in self.connections.items() if idle), None)
            if waiting is None:
                return False
            del self.connections[waiting]
            waiting.transport.abort()
        self.connections[writer] = True
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            writer.transport.abort()
            return
        try:
            await self._converse(reader, writer)
        except asyncio.CancelledError:
            # The loop is shutting down with a request still being answered (a long
            # poll): the connection goes with it. Not re-raised: asyncio's stream callback
            # asks a cancelled task for its exception and logs a traceback (3.11).
            writer.transport.abort()
        finally:
            self.connections.pop(writer, None)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if request is None and writer in self.connections:
                        self.connections[writer] = True  # between requests (or before one)
                    conn.receive_data(await asyncio.wait_for(reader.read(65536), 30))
                elif isinstance(event, h11.Request):
                    if writer in self.connections:
                        self.connections[writer] = False
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        await self._send(
                            conn, writer, Response(413, b"request body too large\n"), False
                        )
                        break
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    response = await self._respond(request, bytes(body), _peer(writer))
                    await self._send(conn, writer, response, request.method == b"HEAD")
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                    request = None
                else:  # ConnectionClosed, PAUSED
                    break
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, head: bool
    ) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *response.headers,
        ]
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        if not head:
            writer.write(conn.send(h11.Data(data=response.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _respond(self, event: h11.Request, body: bytes, peer: str = "") -> Response:
        method = event.method.decode()
        target = event.target.decode("ascii", "replace")
        path, _, query_text = target.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
        handler = self.routes.get(("GET" if method == "HEAD" else method, path))
        if handler is None:
            known = "\n".join(sorted(f"{m} {p}" for m, p in self.routes))
            return Response(404, f"no such endpoint {method} {path}; try:\n{known}\n".encode())
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            result = handler(Request(method, path, query, body, peer, headers))
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:  # an admin page must never take the process down
            log.warning("endpoint %s %s failed: %s: %s", method, path, type(exc).__name__, exc)
            return Response(500, f"{type(exc).__name__}: {exc}\n".encode())


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    return str(name[0]) if isinstance(name, tuple) and name else ""
