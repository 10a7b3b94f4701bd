"""Readiness probes of a dev cluster's components: one HTTP GET each, bounded in time."""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

__all__ = ["free_port", "get", "insecure_tls", "mutual_tls"]

PROBE_TIMEOUT = 3.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just had free on ``host`` (another process may take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def mutual_tls(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Client TLS that verifies the API server against ``ca`` and presents ``cert``."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def insecure_tls() -> ssl.SSLContext:
    """For the /healthz of the controller-manager and scheduler on loopback: their serving
    certificates are self-signed in memory at start, so there is nothing to verify against."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def get(
    host: str, port: int, path: str, tls: ssl.SSLContext | None = None
) -> tuple[int, str] | None:
    """(status, body) of ``GET path``, or None if nothing answered (yet)."""
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=PROBE_TIMEOUT, context=tls)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(64 * 1024).decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
