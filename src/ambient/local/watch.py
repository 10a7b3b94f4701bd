"""Watching the config folder: poll, debounce, then reload.

Polling (no inotify dependency): every ``interval`` the watcher lists the files the
loader would read (``find_files``) with their size and modification time, and hashes
the content of those whose size or time changed (so ``touch`` alone is no change, and
an edit that keeps size and time is still caught at the next real change). A change
starts a quiet period: the reload runs once nothing has changed for ``quiet`` seconds
(editors write a file in several steps; ``cp -r`` writes many files), so a burst of
writes is one reload.

The watcher only calls ``on_change``; what a reload does (and that a bad edit is refused
and logged with the loader's errors, keeping the running configuration) is
``MeshConfig.reload``'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from ambient.config.loader import find_files

__all__ = ["FolderWatcher", "fingerprint"]

log = logging.getLogger("ambient.watch")

_Stat = tuple[int, int]  # size, mtime_ns


def _stats(folder: Path) -> dict[str, _Stat]:
    files, _problems = find_files([folder])
    stats: dict[str, _Stat] = {}
    for file in files:
        with contextlib.suppress(OSError):  # removed while listing: absent
            st = file.stat()
            stats[str(file)] = (st.st_size, st.st_mtime_ns)
    return stats


def _digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def fingerprint(folder: Path) -> dict[str, str]:
    """Content hash of every file the loader reads in ``folder`` (path -> sha256)."""
    return {path: _digest(path) for path in _stats(folder)}


class FolderWatcher:
    """Calls ``on_change()`` after the files of ``folder`` changed and then stayed quiet."""

    def __init__(
        self,
        folder: Path,
        on_change: Callable[[], None],
        *,
        interval: float = 0.1,
        quiet: float = 0.2,
    ) -> None:
        if interval <= 0 or quiet < 0:
            raise ValueError(f"need interval > 0 and quiet >= 0, got {interval}, {quiet}")
        self.folder = folder
        self.on_change = on_change
        self.interval = interval
        self.quiet = quiet
        self.reloads = 0  # times on_change was called, for tests
        self._stats = _stats(folder)
        self._hashes = {path: _digest(path) for path in self._stats}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _changed(self) -> bool:
        """Whether any file's content changed since the last call (updates the baseline)."""
        stats = _stats(self.folder)
        if stats == self._stats:
            return False
        changed = set(stats) != set(self._stats)
        for path, stat in stats.items():
            if self._stats.get(path) != stat:
                digest = _digest(path)
                if self._hashes.get(path) != digest:
                    changed = True
                self._hashes[path] = digest
        for path in set(self._hashes) - set(stats):
            del self._hashes[path]
        self._stats = stats
        return changed

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pending_since: float | None = None
        while True:
            await asyncio.sleep(self.interval)
            try:
                changed = await loop.run_in_executor(None, self._changed)
            except Exception as exc:  # a transient listing problem: try again next time
                log.warning("watching %s: %s: %s", self.folder, type(exc).__name__, exc)
                continue
            now = loop.time()
            if changed:
                pending_since = now
            elif pending_since is not None and now - pending_since >= self.quiet:
                pending_since = None
                self.reloads += 1
                try:
                    self.on_change()
                except Exception as exc:  # the reload logs its own refusals; keep watching
                    log.error("reloading %s failed: %s: %s", self.folder, type(exc).__name__, exc)
