"""The HBONE server: TLS listener, peer verification, one handler task per CONNECT.

Connections still in their TLS handshake are bounded (``hbone.admission``) and
must finish it within ``HANDSHAKE_TIMEOUT`` (5 s: a TLS 1.3 handshake is one
round trip, and a client that cannot finish in 5 s holds a descriptor for
nothing). A CONNECT reset by its client before it was answered cancels its
handler, so a rapid reset costs no work upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from ambient.hbone.admission import Pending, PendingHandshakes
from ambient.hbone.connection import HboneTransport
from ambient.hbone.messages import Status
from ambient.hbone.protocol import HboneSettings, Side
from ambient.hbone.stream import HboneStream
from ambient.hbone.tls import (
    SERVER_CONTEXTS,
    PeerInfo,
    PeerRejected,
    check_client,
    peer_identity,
)
from ambient.identity.certs import WorkloadCertificate

log = logging.getLogger("ambient.hbone")

StreamHandler = Callable[[HboneStream], Awaitable[None]]
CertificateSource = Callable[[], WorkloadCertificate]
HANDSHAKE_TIMEOUT = 5.0


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
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        pending: PendingHandshakes | None = None,
    ) -> None:
        """``pending``: shared with other listeners of the process to bound their
        unauthenticated connections together (default: this listener's own)."""
        self._certificate = certificate
        self._handler = handler
        self._trust_domain = trust_domain
        self.settings = settings or HboneSettings()
        self._handshake_timeout = handshake_timeout
        self.pending = pending if pending is not None else PendingHandshakes()
        self._contexts = SERVER_CONTEXTS  # one context per certificate, shared by listeners
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[HboneTransport] = set()
        self._draining: str | None = None

    async def start(
        self, host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False
    ) -> tuple[str, int]:
        """Listen on ``host:port`` (0 picks a port); returns the bound address.

        ``reuse_port``: ``SO_REUSEPORT``, so that worker processes of the same user can
        each bind the same address and the kernel spreads new connections over them."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((host, port))
            listener.listen(backlog)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return self.start_on(listener)

    def start_on(self, listener: socket.socket) -> tuple[str, int]:
        """Serve on ``listener``, bound, listening and non-blocking (e.g. made in a pod's
        network namespace); returns its address. The server owns it from now on."""
        self._listener = listener
        self._acceptor = asyncio.ensure_future(self._accept_loop(listener))
        sockname = listener.getsockname()
        return str(sockname[0]), int(sockname[1])

    async def stop_listening(self) -> None:
        """Accept no new connections; open ones (and their streams) carry on."""
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def drain(self, reason: str = "listener closed") -> None:
        """Accept no new connections, and end each open one (GOAWAY, then close) as soon
        as it has no open stream: tunnels carry on until they end, but an idle connection
        is not left for a client's pool to reuse. That matters when the listener's pod is
        gone and its address goes to a new pod (a kubelet reuses freed addresses): new
        CONNECTs to that address must reach the new pod's listener, not this one. (h2
        cannot keep streams going after sending GOAWAY, hence the wait for idleness.)"""
        await self.stop_listening()
        self._draining = reason
        for conn in list(self.connections):
            self._end_when_idle(conn)

    def _end_when_idle(self, conn: HboneTransport) -> None:
        loop = asyncio.get_running_loop()
        reason = self._draining or "listener closed"

        def end(current: HboneTransport) -> None:
            if not current.streams and not current.closed:
                current.close(reason)

        def idle(current: HboneTransport) -> None:
            loop.call_soon(end, current)  # on_idle fires inside the transport's handling

        conn.on_idle = idle
        end(conn)

    async def close(self) -> None:
        """Stop listening, send GOAWAY on every connection and stop every handler."""
        await self.stop_listening()
        for conn in list(self.connections):
            conn.close("server shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals -----------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept_loop(self, listener: socket.socket) -> None:
        # Raw accept + connect_accepted_socket(ssl=...): TLS is set up before any
        # byte is read, so no early ClientHello can be lost, and every handshake
        # failure reaches us (the loop's own TLS servers only log them in debug mode).
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("HBONE: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            entry = Pending(conn)
            entry.task = self._spawn(self._handshake(entry, address))
            entry.task.add_done_callback(functools.partial(self._handshake_done, entry))
            self.pending.admit(entry)

    def _handshake_done(self, entry: Pending, _: object) -> None:
        self.pending.finished(entry)
        if not entry.owned:  # never handed to a transport (cancelled early, or failed)
            entry.sock.close()

    async def _handshake(self, entry: Pending, address: tuple[str, int]) -> None:
        sock = entry.sock
        where = f"{address[0]}:{address[1]}"
        cert = self._certificate()
        trust_domain = self._trust_domain or cert.identity.trust_domain
        conn = HboneTransport(Side.SERVER, self.settings, on_stream=self._on_stream)
        loop = asyncio.get_running_loop()

        def protocol() -> HboneTransport:
            entry.owned = True  # the transport closes the socket from now on
            return conn

        try:
            tls_transport, _ = await loop.connect_accepted_socket(
                protocol,
                sock,
                ssl=self._contexts.get(cert),
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            log.warning("HBONE: refused connection from %s: %s", where, describe_tls_error(exc))
            sock.close()
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
        conn.attach(tls_transport, PeerInfo(identity, (str(address[0]), int(address[1]))))
        if self._draining is not None:  # accepted just before drain()
            self._end_when_idle(conn)

    def _on_stream(self, stream: HboneStream) -> None:
        # A CONNECT reset before its answer cancels its handler, and with it the dial
        # to the application (the socket is closed): a rapid reset costs no upstream work.
        stream.on_abandoned(self._spawn(self._serve(stream)).cancel)

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
    if isinstance(exc, ConnectionAbortedError) and str(exc):
        return f"TLS handshake aborted: {exc}"
    if isinstance(exc, ConnectionError):
        return (
            "peer closed the connection during the TLS handshake "
            f"(did it reject our certificate?) ({type(exc).__name__})"
        )
    return f"{type(exc).__name__}: {exc}"
