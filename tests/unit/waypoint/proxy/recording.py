"""A stand-in for the tunnel's HboneStream that records each write (no HBONE needed)."""

from __future__ import annotations


class RecordingStream:
    """What a downstream sink wrote, one entry per ``write`` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        return None
