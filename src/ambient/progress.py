"""Progress of long operations: a live status line on a terminal, quiet in scripts.

``progress()`` yields a :class:`Reporter` whose ``step`` fits the ``Callable[[str], None]``
callbacks the long operations take (``ambient install``, the dev cluster's build) and
whose ``count`` shows a done/total bar (``ambient up`` starting pods):

- on a terminal (the stream is a TTY and ``TERM`` is not ``dumb``): rich's live display on
  standard error, a spinner, the current step, a bar when counted and the elapsed time;
  it disappears when the operation ends, leaving the lines written with ``note``. Log
  records of the root logger's stream handlers print above it while it runs;
- anywhere else (a pipe, a file, CI): nothing, so scripts read only the command's
  results; with ``lines=True`` each step and note is one plain line stamped with the
  seconds since the start (for operations that run for many minutes, such as the dev
  cluster's first build, whose log says where the time went).

Decisions where kubectl and istioctl are silent (they show no progress): progress goes to
standard error, never standard output; no environment switch (redirect standard error to
turn it off).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

__all__ = ["Reporter", "is_terminal", "progress"]


class Reporter(Protocol):
    live: bool  # a display on a terminal (worth feeding counts to)

    def step(self, message: str) -> None:
        """What is being done now (replaces the previous step)."""

    def count(self, done: int, total: int) -> None:
        """How far the current step is (``done`` of ``total``)."""

    def note(self, message: str) -> None:
        """A line that stays (a finished part, a warning)."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can show a live display."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class _Quiet:
    live = False

    def step(self, message: str) -> None:
        pass

    def count(self, done: int, total: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class _Lines:
    live = False

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream = stream
        self.prefix = prefix
        self.started = time.monotonic()

    def _print(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{self.prefix}{elapsed:6.1f}s] {message}", file=self.stream, flush=True)

    def step(self, message: str) -> None:
        self._print(message)

    def count(self, done: int, total: int) -> None:
        pass  # a line per count would flood a log

    def note(self, message: str) -> None:
        self._print(message)


class _Terminal:
    live = True

    def __init__(self, display: Any, task: Any) -> None:
        self.display = display
        self.task = task

    def step(self, message: str) -> None:
        self.display.update(self.task, description=message, total=None, completed=0, counted="")

    def count(self, done: int, total: int) -> None:
        self.display.update(self.task, total=total, completed=done, counted=f"{done}/{total}")

    def note(self, message: str) -> None:
        self.display.console.print(message, markup=False, highlight=False)


@contextmanager
def _follow_logging(stream: TextIO, proxy: TextIO) -> Iterator[None]:
    """Point the root logger's handlers that write to ``stream`` at ``proxy`` meanwhile."""
    moved = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is stream
    ]
    for handler in moved:
        handler.setStream(proxy)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(stream)


@contextmanager
def progress(
    first: str = "",
    *,
    stream: TextIO | None = None,
    lines: bool = False,
    prefix: str = "",
    terminal: bool | None = None,
) -> Iterator[Reporter]:
    """A reporter for one long operation (see the module docstring); ``first`` is its first
    step. ``terminal`` overrides the detection (tests)."""
    out = stream if stream is not None else sys.stderr
    live = is_terminal(out) if terminal is None else terminal
    if not live:
        reporter: Reporter = _Lines(out, prefix) if lines else _Quiet()
        if first:
            reporter.step(first)
        yield reporter
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    on_stderr = out is sys.stderr
    console = Console(file=out, force_terminal=True, stderr=on_stderr)
    display = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[counted]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=on_stderr,
    )
    with display:
        task = display.add_task(first, total=None, counted="")
        with _follow_logging(out, sys.stderr if on_stderr else out):  # the proxy, if any
            yield _Terminal(display, task)
