"""Calls to a ztunnel's admin port from the CLI (standard library only)."""

from __future__ import annotations

import http.client
from urllib.parse import urlencode

__all__ = ["post_logging"]


def post_logging(
    host: str, port: int, query: dict[str, str], timeout: float = 5.0
) -> tuple[int, str]:
    """``POST /logging?QUERY`` (``reset`` sent bare, as istioctl does); (status, body)."""
    parts = [urlencode({k: v}) if v else k for k, v in query.items()]
    path = "/logging" + ("?" + "&".join(parts) if parts else "")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (http.client.HTTPException, TimeoutError) as exc:
        raise OSError(f"{host}:{port}: {exc}") from None
    finally:
        conn.close()
