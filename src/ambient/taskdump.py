"""What a proxy process is doing right now: every asyncio task with the frames it is
suspended in, and the flow-control state of every connection of the layers that
register a section (:func:`register`): HBONE connections, the waypoint's downstream
and upstream HTTP/2 connections.

Served as ``/debug/tasks`` on a ztunnel's admin port (whose waypoints run in the same
process), as Go servers serve ``/debug/pprof/goroutine?debug=2``: when traffic stalls,
it shows which task waits where (a body sender for a window, a reader for data, a
writer in ``drain()``) and what each connection's windows and queues are. The stacks
name source files and functions only, no data; the admin port is the node's own, as
``/config_dump`` is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["debug_text", "register", "task_stacks"]

Section = Callable[[], list[dict[str, Any]]]
_SECTIONS: dict[str, Section] = {}


def register(title: str, section: Section) -> None:
    """Add a section to the dump: ``section()`` describes one connection per item."""
    _SECTIONS[title] = section


MAX_DEPTH = 24  # frames per task: deeper chains are cut (recursion would be a bug anyway)


def _await_chain(coro: Any) -> tuple[list[FrameType], Any]:
    """The frames of a suspended coroutine and those it awaits, outermost first, and the
    awaitable at the bottom (typically a Future)."""
    frames: list[FrameType] = []
    while coro is not None and len(frames) < MAX_DEPTH:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        inner = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        coro = inner or getattr(coro, "ag_await", None)
    return frames, coro


def task_stacks() -> list[str]:
    """One text block per asyncio task of the running loop: its name, then where it waits."""
    blocks = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        frames, leaf = _await_chain(task.get_coro())
        lines = [f"{task.get_name()}{' (done)' if task.done() else ''}"]
        for frame in frames:
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_qualname}")
        if leaf is not None:
            lines.append(f"  awaiting {type(leaf).__name__}")
        blocks.append("\n".join(lines))
    return blocks


def debug_text() -> str:
    """The whole dump as text: each section's connections (JSON, one per line), then the
    tasks."""
    parts = []
    for title, section in _SECTIONS.items():
        items = section()
        parts.append(f"{len(items)} {title}")
        parts += [json.dumps(item, sort_keys=True, default=str) for item in items]
    stacks = task_stacks()
    parts.append(f"\n{len(stacks)} asyncio tasks")
    parts += stacks
    return "\n".join(parts) + "\n"
