"""A request body that can be sent again, for retries, while it stays small.

Envoy buffers a request body for retries up to a per-request limit and gives
up retrying beyond it. We keep every chunk read, up to ``RETRY_BODY_LIMIT``
(1 MiB, Envoy's default buffer limit), while the body streams upstream as
usual (nothing is read ahead: a 100 MB upload streams with back-pressure and
is simply not retried once past the limit). ``rewind`` makes the next reads
return the kept chunks first, then the rest of the client's body.
"""

from __future__ import annotations

import collections

from ambient.waypoint.model import Headers
from ambient.waypoint.proxy.messages import Body

__all__ = ["RETRY_BODY_LIMIT", "ReplayableBody", "WholeBody"]

RETRY_BODY_LIMIT = 1024 * 1024


class ReplayableBody:
    def __init__(self, body: Body, limit: int = RETRY_BODY_LIMIT) -> None:
        self._body = body
        self._limit = limit
        self.length = body.length
        self.empty = body.empty
        self.replayable = body.length is None or body.length <= limit
        self._kept: list[bytes] = []
        self._kept_size = 0
        self._replay: collections.deque[bytes] = collections.deque()

    def _keep(self, data: bytes) -> None:
        if not self.replayable or not data:
            return
        self._kept_size += len(data)
        if self._kept_size > self._limit:
            self.replayable = False
            self._kept.clear()
        else:
            self._kept.append(data)

    @property
    def trailers(self) -> Headers:
        return self._body.trailers

    async def read(self) -> bytes:
        if self._replay:
            return self._replay.popleft()
        data = await self._body.read()
        self._keep(data)
        return data

    def ready(self) -> bytes | None:
        rest = self._body.ready()
        if rest is None:
            return None
        self._keep(rest)
        if not self._replay:
            return rest
        data = b"".join(self._replay) + rest
        self._replay.clear()
        return data

    def rewind(self) -> None:
        """Start again from the first byte (only while ``replayable``)."""
        self._replay = collections.deque(self._kept)

    def stop_keeping(self) -> None:
        """No more retries: free what was kept and keep nothing more."""
        self.replayable = False
        self._kept.clear()


class WholeBody:
    """A request body already whole in memory (the usual small one): each attempt takes
    it again as it is, with no copy kept aside and no layer per read."""

    __slots__ = ("_data", "_taken", "empty", "length", "replayable", "trailers")

    def __init__(self, data: bytes, body: Body) -> None:
        self._data = data
        self._taken = False
        self.length = body.length
        self.empty = body.empty
        self.trailers = body.trailers
        self.replayable = len(data) <= RETRY_BODY_LIMIT

    async def read(self) -> bytes:
        return self.ready() or b""

    def ready(self) -> bytes | None:
        if self._taken:
            return b""
        self._taken = True
        return self._data

    def rewind(self) -> None:
        self._taken = False

    def stop_keeping(self) -> None:
        self.replayable = False
