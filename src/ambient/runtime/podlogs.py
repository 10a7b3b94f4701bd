"""Reading a pod's log files for ``ambient logs`` (no mesh calls here).

Both sides of ``ambient logs`` read through here: the CLI in folder mode (the files
of the state folder), and on a cluster the kubelet socket of ``ambient up
--kubeconfig`` (``ambient.local.kubeletapi``), whose nodes' runtime writes the same
files.

A container's output is ``STATE/logs/<namespace>_<pod>_<container>.log`` (the
runtime appends the process's stdout and stderr as they come, and a
``--- <time> ambient: ... ---`` note at each start and exit). ``kubectl logs``
shows the container's output only, so the notes are left out; they are the only
times in the file, so ``--since`` starts at the container run that was running
at that moment (the lines of a run carry no times of their own: at least every
line since is shown). A waypoint has no process: its lines are those of the node
proxy's log (``ambient-system_ztunnel-<node>_ztunnel-<node>.log``) tagged with it
(``[namespace/name]``, ``ambient.logconfig``); they carry their time of day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "LogSource",
    "container_lines",
    "follow",
    "node_log_paths",
    "pod_sources",
    "read_lines",
    "tail",
    "waypoint_lines",
]

_NOTE = re.compile(r"^--- (\S+) ambient: .* ---$")
_CLOCK = re.compile(r"^(\d\d):(\d\d):(\d\d) ")


def _note_time(line: str) -> datetime | None:
    m = _NOTE.match(line)
    if m is None:
        return None
    try:
        return datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    except ValueError:
        return None


def container_lines(text: str, since: datetime | None = None) -> list[str]:
    """The container's own lines of a log file's ``text`` (see the module docstring)."""
    lines = text.splitlines()
    start = 0
    if since is not None:
        for i, line in enumerate(lines):
            at = _note_time(line)
            if at is not None and at <= since:
                start = i  # the last note at or before ``since``: everything after it
    return [line for line in lines[start:] if _NOTE.match(line) is None]


def waypoint_lines(
    texts: Iterable[str],
    workload: str,
    since: datetime | None = None,
    now: datetime | None = None,
    *,
    untagged: bool = False,
) -> list[str]:
    """The lines of node-proxy logs tagged ``[workload]`` (``namespace/name``; every line
    with ``untagged``); with ``since``, those logged since (their HH:MM:SS read as within
    the last day)."""
    tag = f" [{workload}] "
    now = now or datetime.now(UTC)
    out = []
    for text in texts:
        for line in text.splitlines():
            if not untagged and tag not in line:
                continue
            if since is not None:
                m = _CLOCK.match(line)
                if m is None:
                    continue
                at = now.replace(hour=int(m[1]), minute=int(m[2]), second=int(m[3]), microsecond=0)
                if at > now + timedelta(seconds=1):
                    at -= timedelta(days=1)
                if at < since.replace(microsecond=0):
                    continue
            out.append(line)
    return out


def tail(lines: list[str], count: int | None) -> list[str]:
    """The last ``count`` lines (None or negative: all, as kubectl's ``--tail -1``)."""
    if count is None or count < 0:
        return lines
    return lines[len(lines) - count :] if count else []


def node_log_paths(state_root: Path, nodes: Iterable[str]) -> list[Path]:
    """The node proxies' log files of ``nodes`` that exist."""
    logs = state_root / "logs"
    return [
        p for n in nodes if (p := logs / f"ambient-system_ztunnel-{n}_ztunnel-{n}.log").exists()
    ]


def follow(path: Path, offset: int) -> Iterator[str]:
    """Complete lines appended to ``path`` after byte ``offset``, as they come (the
    caller polls: each call of ``next`` returns what is there, or ``""`` if nothing)."""
    pending = b""
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        *complete, pending = pending.split(b"\n")
        if not complete:
            yield ""
        for raw in complete:
            yield raw.decode(errors="replace")


@dataclass(frozen=True)
class LogSource:
    """One container's log: the file and how its lines are read (``system``: a mesh
    process's own log, every line its own, each with its time of day; ``workload``:
    a waypoint ``namespace/name`` whose lines are picked out of the node proxy's log
    at ``path``)."""

    pod: str
    container: str
    path: Path
    system: bool = False
    workload: str = ""

    @property
    def prefix(self) -> str:
        """kubectl's ``--prefix``: ``[pod/NAME/CONTAINER] ``."""
        return f"[pod/{self.pod}/{self.container}] "

    def lines(self, text: str, since: datetime | None = None) -> list[str]:
        """The container's lines of ``text`` (a whole file, or what was appended)."""
        if self.workload:
            return waypoint_lines([text], self.workload, since)
        if self.system and since is not None:
            return waypoint_lines([text], "", since, untagged=True)
        return container_lines(text, since)


def pod_sources(
    logs_dir: Path, pod: Mapping[str, Any], container: str | None, all_containers: bool
) -> tuple[list[LogSource], str | None]:
    """The log sources of one pod of ``GET /pods`` (or ``/system-pods``) and the note
    kubectl prints on stderr when it picks a container; ``ValueError`` names a
    container the pod does not have."""
    names = [c["name"] for c in pod.get("containers", [])] or [
        c.get("name", "") for c in (pod.get("spec") or {}).get("containers", [])
    ]
    note = None
    if all_containers:
        chosen = names
    elif container is None:
        chosen = names[:1]
        if len(names) > 1:
            note = f'Defaulted container "{names[0]}" out of: {", ".join(names)}'
    elif container in names:
        chosen = [container]
    else:
        raise ValueError(f"container {container} is not valid for pod {pod['name']}")
    ns, name = pod["namespace"], pod["name"]
    system = bool(pod.get("system"))
    return [LogSource(name, c, logs_dir / f"{ns}_{name}_{c}.log", system) for c in chosen], note


def read_lines(
    source: LogSource,
    *,
    count: int | None = None,
    since: datetime | None = None,
    offset: int | None = None,
) -> tuple[list[str], int]:
    """One read of ``source``: without ``offset`` its last ``count`` lines (since
    ``since``), else the complete lines appended after byte ``offset``; with the offset
    the next read starts from (after the last complete line). A file shorter than
    ``offset`` (replaced) is read from its start."""
    try:
        with source.path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = 0 if offset is None or offset > size else offset
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return [], offset or 0
    complete = data.rfind(b"\n") + 1
    text = data[:complete].decode(errors="replace")
    if offset is None:
        return tail(source.lines(text, since), count), start + complete
    return source.lines(text), start + complete
