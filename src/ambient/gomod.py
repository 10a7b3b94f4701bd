"""Go toolchain and cache helpers for the parts built or fetched from Go modules.

:func:`cache_root` is where they keep what they build or fetch
(``$AMBIENT_CACHE``, else ``$XDG_CACHE_HOME/ambient``, else ``~/.cache/ambient``).

Debian's ``golang-go`` (1.19 on Debian 12) may sit in ``/usr/bin`` beside the
machine's own Go in ``/usr/local/go/bin``; whichever ``PATH`` finds first is not
necessarily the one we need. Candidates: ``$GO`` (a path), the ``go`` on ``PATH``,
``/usr/local/go/bin/go``, ``/usr/lib/go/bin/go``; the newest (``go env GOVERSION``)
wins if it is at least the wanted version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GoNotFound", "GoTool", "cache_root", "find_go", "parse_go_version"]

_CANDIDATES = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")
_VERSION = re.compile(r"^go(\d+)\.(\d+)(?:\.(\d+))?")


class GoNotFound(RuntimeError):
    """No Go toolchain at least as new as asked for."""


@dataclass(frozen=True)
class GoTool:
    path: Path
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return "go" + ".".join(str(part) for part in self.version)


def parse_go_version(text: str) -> tuple[int, int, int] | None:
    """``go1.26.8`` → (1, 26, 8); ``go1.26`` → (1, 26, 0); anything else → None."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _version_of(go: str) -> tuple[int, int, int] | None:
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_go_version(out.stdout) if out.returncode == 0 else None


def find_go(minimum: tuple[int, int] = (1, 26)) -> GoTool:
    """The newest Go toolchain among the candidates, if at least ``minimum`` (major, minor).

    The newest rather than the first: an old Go earlier on ``PATH`` must not shadow
    the machine's newer one. Raises GoNotFound naming the candidates tried.
    """
    seen: list[str] = []
    best: GoTool | None = None
    for candidate in (os.environ.get("GO"), shutil.which("go"), *_CANDIDATES):
        if (
            not candidate
            or os.path.realpath(candidate) in seen
            or not os.access(candidate, os.X_OK)
        ):
            continue
        seen.append(os.path.realpath(candidate))
        version = _version_of(candidate)
        if version is not None and (best is None or version > best.version):
            best = GoTool(Path(candidate), version)
    if best is not None and best.version[:2] >= minimum:
        return best
    wanted = f"go{minimum[0]}.{minimum[1]}"
    tried = ", ".join(seen) or "none found"
    found = f"; newest found: {best.version_text}" if best else ""
    raise GoNotFound(
        f"no Go toolchain >= {wanted} (tried: {tried}{found}); install Go {wanted} or newer "
        "(e.g. in /usr/local/go) or point $GO at its go binary"
    )


def cache_root() -> Path:
    """``$AMBIENT_CACHE``, else ``$XDG_CACHE_HOME/ambient``, else ``~/.cache/ambient``."""
    explicit = os.environ.get("AMBIENT_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ambient"
