"""A waypoint worker process (``python -m ambient.waypoint.worker FD``), see ``workers``.

It serves the waypoint's HBONE listener (``SO_REUSEPORT``) with its own state, L7
objects and certificate, all pushed by its parent over the control channel ``FD``;
it has no admin endpoints and no xDS or CA client of its own. It exits when told to
close or when the channel ends (its parent is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from typing import Any

from prometheus_client import generate_latest

from ambient.identity.certs import CertificateError, WorkloadCertificate
from ambient.identity.manager import CertificateManager
from ambient.identity.spiffe import SpiffeId
from ambient.logconfig import FORMAT
from ambient.state.proxy import ProxyState
from ambient.waypoint.config import L7Config, hosted_waypoint
from ambient.waypoint.workers import MAX_MESSAGE, read_message, write_message

__all__ = ["PushedCertificates", "main"]

log = logging.getLogger("ambient.waypoint")


class PushedCertificates(CertificateManager):
    """Certificates a worker is given by its parent (it never signs or renews one)."""

    def __init__(self) -> None:
        super().__init__(self._no_issuer)
        self._pushed: dict[SpiffeId, WorkloadCertificate] = {}

    @staticmethod
    async def _no_issuer(identity: SpiffeId, _csr: bytes) -> tuple[bytes, bytes]:
        raise CertificateError(f"a waypoint worker does not fetch certificates ({identity})")

    async def get(self, identity: SpiffeId) -> WorkloadCertificate:
        cert = self._pushed.get(identity)
        if cert is None:
            raise CertificateError(f"no certificate for {identity} was pushed to this worker")
        return cert

    def put(self, cert: WorkloadCertificate) -> None:
        self._pushed[cert.identity] = cert
        self._notify(cert)


async def serve(fd: int) -> None:
    """Follow the parent's messages until ``close`` or the end of the channel."""
    channel = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=channel, limit=MAX_MESSAGE)
    kind, init = await read_message(reader)
    if kind != "init":
        raise RuntimeError(f"waypoint worker: expected init, got {kind}")
    logging.basicConfig(level=init["log_level"], format=FORMAT.replace("%(workload)s", ""))
    index = init["index"]
    state = ProxyState(init["node"])
    l7 = L7Config()
    certificates = PushedCertificates()
    hosted = hosted_waypoint(
        state,
        certificates,
        l7,
        init["workload"],
        init["settings"],
        reuse_port=True,
        admin=False,
        hbone_port=init["hbone_port"],
    )
    started = False
    try:
        while True:
            try:
                kind, payload = await read_message(reader)
            except EOFError:
                log.info("waypoint worker %d: its parent is gone", index)
                break
            if kind == "push":
                apply(payload, state, l7, certificates)
                if not started:  # the first push holds everything: now serve
                    try:
                        await hosted.start()
                    except Exception as exc:
                        write_message(writer, "error", f"{type(exc).__name__}: {exc}")
                        raise
                    started = True
                    write_message(writer, "ready")
            elif kind == "metrics":
                write_message(writer, "metrics", generate_latest(hosted.waypoint.metrics.registry))
            elif kind == "ping":  # every push before it is applied
                write_message(writer, "pong")
            elif kind == "close":
                break
            await writer.drain()
    finally:
        if started:
            await hosted.close()
        writer.close()


def apply(push: dict[str, Any], state: ProxyState, l7: L7Config, certs: PushedCertificates) -> None:
    """One push: the state delta, then the L7 objects and the certificate if they changed."""
    if push["upserted"] or push["removed"] or state.version == 0:
        state.apply(push["upserted"], push["removed"])
    if "l7" in push:
        l7.set_config(push["l7"])
    if "certificate" in push:
        certs.put(push["certificate"])


def main() -> None:
    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a worker stops
    with contextlib.suppress(EOFError, ConnectionError):
        uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
