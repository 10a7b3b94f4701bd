"""Helpers for supervisor tests: containers as Python snippets, event collection, pid checks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from ambient.config.resources import Container, EnvVar
from ambient.runtime import ContainerEvent, EventKind, PodRun

TIMEOUT = 10.0
"""Upper bound for anything a test waits for; normally reached in milliseconds."""

SLEEPER = "import time\ntime.sleep(1000)"


def py(name: str, code: str, *args: str, env: tuple[EnvVar, ...] = ()) -> Container:
    """A container running ``python -c code args...``."""
    return Container(name, command=(sys.executable, "-c", code), args=args, env=env)


def pod(base_dir: Path, *containers: Container, name: str = "web", **changes: object) -> PodRun:
    """A pod in namespace ``shop`` whose working directory is ``base_dir``."""
    fields: dict[str, object] = {
        "namespace": "shop",
        "name": name,
        "uid": f"uid-{name}",
        "ip": "127.10.0.5",
        "containers": containers,
        "labels": {"app": name},
        "base_dir": base_dir,
    }
    fields.update(changes)
    return PodRun(**fields)  # type: ignore[arg-type]


def never_starts(base_dir: Path, name: str = "app") -> Container:
    """A container whose exec always fails: an executable script with a missing interpreter."""
    script = base_dir / "bad.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    return Container(name, command=("./bad.sh",))


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: this host's init may not reap)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` (for things only the filesystem tells, like a pid file)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - a file or /proc has no event to wait on
            await asyncio.sleep(0.01)
    assert predicate(), what


async def read_when_written(path: Path, timeout: float = TIMEOUT) -> str:
    """The content of a file a container writes atomically (tmp + rename)."""
    await wait_until(path.exists, f"{path} written", timeout)
    return _read(path)


def _read(path: Path) -> str:
    return path.read_text()


def atomic_write(target: str, expression: str) -> str:
    """Python source that writes ``expression`` (str) to ``target`` via a rename."""
    return f"import os\nopen({target!r} + '.tmp', 'w').write({expression})\nos.replace({target!r} + '.tmp', {target!r})\n"


class Events:
    """Collects supervisor events; tests wait on them instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[ContainerEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ContainerEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def of(self, kind: EventKind, container: str | None = None) -> list[ContainerEvent]:
        """Events of ``kind`` (for ``container``) so far."""
        return [
            e
            for e in self.events
            if e.kind is kind and (container is None or e.container == container)
        ]

    async def wait_for(
        self,
        kind: EventKind,
        container: str | None = None,
        count: int = 1,
        timeout: float = TIMEOUT,
    ) -> list[ContainerEvent]:
        """Wait until ``count`` events of ``kind`` were seen; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.of(kind, container)) < count:
                await self._changed.wait()
        return self.of(kind, container)
