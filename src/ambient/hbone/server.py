"""The HBONE server: TLS listener, peer verification, one handler task per CONNECT."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

from ambient.hbone.connection import HboneTransport
from ambient.hbone.messages import Status
from ambient.hbone.protocol import HboneSettings, Side
from ambient.hbone.stream import HboneStream
from ambient.hbone.tls import ContextCache, PeerInfo, PeerRejected, check_client, peer_identity
from ambient.identity.certs import WorkloadCertificate

log = logging.getLogger("ambient.hbone")

StreamHandler = Callable[[HboneStream], Awaitable[None]]
CertificateSource = Callable[[], WorkloadCertificate]


class _Accepting(asyncio.Protocol):
    """Plain TCP until the TLS handshake takes over; reading is paused until then."""

    def __init__(self, server: HboneServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        tcp.pause_reading()
        self._server._spawn(self._server._handshake(tcp))

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass


class HboneServer:
    """Accepts HBONE connections and hands each CONNECT stream to ``handler``.

    ``certificate`` is called for every new connection, so a renewed
    certificate is used from the next handshake on while open connections keep
    theirs. The handler must answer with ``stream.respond(...)``; a handler that
    returns without answering gets 503 sent for it, and a stream it leaves
    open is reset.
    """

    def __init__(
        self,
        certificate: CertificateSource,
        handler: StreamHandler,
        *,
        trust_domain: str | None = None,
        settings: HboneSettings | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._certificate = certificate
        self._handler = handler
        self._trust_domain = trust_domain
        self.settings = settings or HboneSettings()
        self._handshake_timeout = handshake_timeout
        self._contexts = ContextCache(server_side=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[HboneTransport] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0 picks a port); returns the bound address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Accepting(self), host, port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def stop_listening(self) -> None:
        """Accept no new connections; open ones (and their streams) carry on."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        """Stop listening, send GOAWAY on every connection and stop every handler."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close("server shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- internals -----------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername") or ("?", 0)
        where = f"{peername[0]}:{peername[1]}"
        cert = self._certificate()
        trust_domain = self._trust_domain or cert.identity.trust_domain
        conn = HboneTransport(Side.SERVER, self.settings, on_stream=self._on_stream)
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                transport,
                conn,
                self._contexts.get(cert),
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            log.warning("HBONE: refused connection from %s: %s", where, describe_tls_error(exc))
            transport.abort()
            return
        if tls_transport is None:  # pragma: no cover - peer vanished mid-handshake
            transport.abort()
            return
        ssl_object = tls_transport.get_extra_info("ssl_object")
        try:
            identity = peer_identity(ssl_object)
            check_client(identity, trust_domain)
        except PeerRejected as exc:
            log.warning("HBONE: refused connection from %s: %s", where, exc)
            tls_transport.abort()
            return
        self.connections.add(conn)
        conn.done.add_done_callback(lambda _: self.connections.discard(conn))
        log.debug("HBONE: connection from %s as %s", where, identity)
        conn.attach(tls_transport, PeerInfo(identity, (str(peername[0]), int(peername[1]))))

    def _on_stream(self, stream: HboneStream) -> None:
        self._spawn(self._serve(stream))

    async def _serve(self, stream: HboneStream) -> None:
        try:
            await self._handler(stream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "HBONE: handler failed for CONNECT %s from %s: %s: %s",
                stream.request.authority,
                stream.peer.identity,
                type(exc).__name__,
                exc,
            )
        finally:
            if stream.status is None:
                stream.respond(Status.SERVICE_UNAVAILABLE)
            elif not stream.closed:
                stream.reset()


def describe_tls_error(exc: BaseException) -> str:
    """One line saying why a TLS handshake failed, with a hint for the common cases."""
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        verify = getattr(exc, "verify_message", None)
        hints = {
            "HTTP_REQUEST": "plaintext HTTP is not HBONE (TLS required)",
            "HTTPS_PROXY_REQUEST": "plaintext HTTP CONNECT is not HBONE (TLS required)",
            "WRONG_VERSION_NUMBER": "not a TLS client (plaintext?)",
            "UNSUPPORTED_PROTOCOL": "TLS 1.3 required",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client presented no certificate (mTLS required)",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "client presented no certificate (mTLS required)",
            "NO_SHARED_CIPHER": "no shared cipher / TLS version",
        }
        if verify:
            return f"certificate verify failed: {verify}"
        if reason in hints:
            return f"TLS handshake failed: {hints[reason]} ({reason})"
        return f"TLS handshake failed: {reason or exc}"
    if isinstance(exc, ConnectionError):
        return (
            "peer closed the connection during the TLS handshake "
            f"(did it reject our certificate?) ({type(exc).__name__})"
        )
    return f"{type(exc).__name__}: {exc}"
