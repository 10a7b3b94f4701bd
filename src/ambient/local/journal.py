"""The control plane's journal of ``ambient apply|delete|label``: one durable record per change.

Format: one line per record, ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``
(lines of bare JSON, as earlier versions wrote, are still read).

- :meth:`Journal.append` writes the whole line with one ``write`` on an
  ``O_APPEND`` descriptor and ``fsync``\\s it before returning, so a change is
  on disk before ``ambient apply`` is told it was accepted (a new journal's
  folder is flushed too). A failed or short write is cut back off (the file
  is truncated to where it was): a torn record never stays in front of the
  next one.
- :meth:`Journal.read` (at start, before replaying) repairs a torn tail: bytes
  after the last newline, or a last line whose checksum or JSON is wrong, are
  what a crash in the middle of an append leaves (only the last record can be
  torn: each one is flushed before the next is written, and it was never
  acknowledged). They are cut off, with a warning, so the next record starts
  on a line of its own. Before, a torn line swallowed the next acknowledged
  change (appended to it, it no longer parsed and was skipped).
- A bad record *before* the last one is not a tear but damage: reading fails
  with :class:`JournalError` naming the file and line, and the control plane
  does not start, rather than replay some changes and silently drop others.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from ambient.durable import fsync_dir

__all__ = ["Journal", "JournalError"]

log = logging.getLogger("ambient.config")


class JournalError(ValueError):
    """The journal is damaged before its last record; it cannot be replayed faithfully."""


class Journal:
    """An append-only file of JSON records, each durable once :meth:`append` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` and flush it to disk; raises ``OSError`` (nothing then written)."""
        text = json.dumps(record, separators=(",", ":"))
        line = f"{zlib.crc32(text.encode()):08x} {text}\n".encode()
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)  # never leave a torn record in front of the next one
                raise
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    def read(self) -> list[dict[str, Any]]:
        """Every record, after repairing a torn tail; raises :class:`JournalError`."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: empty unless the last append was torn
        records: list[dict[str, Any]] = []
        keep = len(data) - len(tail)
        for number, raw in enumerate(lines, 1):
            record = _decode(raw)
            if record is not None:
                records.append(record)
                continue
            if number == len(lines):  # the last line: a torn append that kept its newline
                keep -= len(raw) + 1
                tail = raw + b"\n" + tail
                break
            raise JournalError(
                f"{self.path}:{number}: damaged record (checksum or JSON); the journal of "
                "ambient apply/delete/label cannot be replayed as it was written: move it "
                "aside to start from the configuration folder alone"
            )
        if tail:
            log.warning(
                "%s: dropped a torn last record (%d bytes; a crash during the change, "
                "which was never acknowledged)",
                self.path,
                len(tail),
            )
            with self.path.open("r+b") as out:
                out.truncate(keep)
                out.flush()
                os.fsync(out.fileno())
        return records


def _decode(raw: bytes) -> dict[str, Any] | None:
    """One line's record, or None if it is not a whole, intact one."""
    try:
        if raw.startswith(b"{"):  # written before records carried a checksum
            text = raw.decode()
        else:
            crc, sep, body = raw.partition(b" ")
            if not sep or len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
                return None
            text = body.decode()
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
