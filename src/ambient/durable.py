"""Files that survive a crash: write to a temporary file, fsync it, rename, fsync the folder.

A rename is durable only once the directory holding it is flushed: without
the folder's fsync, a power loss after ``os.replace`` may bring back the old
file (or none), although the caller already went on as if the new one were
there.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: Path | str, path: Path) -> None:
    """``os.replace(tmp, path)``, then flush ``path``'s folder (``tmp`` must be fsync'd)."""
    os.replace(tmp, path)
    fsync_dir(path.parent)
