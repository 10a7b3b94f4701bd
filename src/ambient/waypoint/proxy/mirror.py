"""Request mirroring: fire-and-forget copies of a request to a mirror backend.

As Envoy: the copy's authority gets ``-shadow`` appended, its response is
discarded, and it never delays the main request. A request body is teed only
when its Content-Length is at most ``MIRROR_BODY_LIMIT`` (64 KiB, read in full
first); requests with larger or unknown-length bodies are not mirrored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from ambient.state.proxy import ProxyState
from ambient.waypoint.model import Backend, Mirror
from ambient.waypoint.proxy.balancer import Balancer, endpoints_of
from ambient.waypoint.proxy.messages import (
    Body,
    BodyAborted,
    BytesBody,
    UpstreamFailed,
    UpstreamRequest,
)
from ambient.waypoint.proxy.upstream import UpstreamClient

__all__ = ["MIRROR_BODY_LIMIT", "Mirrors"]

log = logging.getLogger("ambient.waypoint")

MIRROR_BODY_LIMIT = 64 * 1024


class Mirrors:
    """The mirrored copies in flight for one waypoint."""

    def __init__(
        self,
        state: ProxyState,
        upstream: UpstreamClient,
        balancer: Balancer,
        version_of: Callable[[Backend, str], str],
    ) -> None:
        self.state = state
        self.version_of = version_of  # the HTTP version to a backend, for a downstream version
        self.upstream = upstream
        self.balancer = balancer
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self, mirrors: tuple[Mirror, ...], request: UpstreamRequest, body: Body, downstream: str
    ) -> Body:
        """Start the mirrored copies of a ``downstream``-version request; returns the body to
        use for the main request."""
        if not body.empty and (body.length is None or body.length > MIRROR_BODY_LIMIT):
            log.debug("not mirroring %s %s: body too big to tee", request.method, request.target)
            return body
        data = b""
        if not body.empty:
            parts = []
            while chunk := await body.read():
                parts.append(chunk)
            data = b"".join(parts)
        for mirror in mirrors:
            if mirror.percent < 100 and random.random() * 100 >= mirror.percent:
                continue
            task = asyncio.ensure_future(self._send(mirror.backend, request, data, downstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return BytesBody(data, body.trailers) if not body.empty else body

    async def _send(
        self, backend: Backend, request: UpstreamRequest, data: bytes, downstream: str
    ) -> None:
        endpoint = self.balancer.pick(backend, endpoints_of(self.state, backend))
        if endpoint is None:
            return
        authority = request.authority
        host, sep, port = authority.rpartition(":")
        shadow = f"{host}-shadow:{port}" if sep and port.isdigit() else f"{authority}-shadow"
        version = self.version_of(backend, downstream)
        copy = UpstreamRequest(request.method, request.target, shadow, request.headers, version)
        try:
            _, response_body = await self.upstream.send(endpoint, copy, BytesBody(data))
            while await response_body.read():
                pass
        except (UpstreamFailed, BodyAborted) as exc:
            log.debug("mirror to %s failed: %s", endpoint.address, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
