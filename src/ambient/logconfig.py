"""Logging of the long-running processes: the line format, per-waypoint tags, live levels.

- Format: ``HH:MM:SS LEVEL logger  message``. A record logged while serving a
  waypoint (``WORKLOAD`` set, e.g. by ``Waypoint._serve``) names it after the
  logger, ``ambient.access [shop/waypoint]``, so ``ambient logs deploy/waypoint``
  picks that waypoint's lines (its access lines included) out of the log of the
  node proxy hosting it.
- Levels change live as ztunnel's ``POST /logging?level=SPEC[&reset]`` does
  (``LogLevels``): SPEC is comma-separated clauses, a bare level
  (``error|warn|info|debug|trace|off``) setting the default and ``target=level``
  (``:`` accepted too, as istioctl sends) one logger's. Targets are ztunnel's
  names mapped onto ours: ``access`` is ``ambient.access`` (every access line,
  ztunnel's and the waypoints'), ``ztunnel::proxy`` is ``ambient.ztunnel.proxy``,
  a name already starting with ``ambient`` is taken as is. ``reset`` goes back to
  the level the process started with (then applies SPEC). ``trace`` is Python's
  DEBUG. The answer is ztunnel's ``current log level is ...`` line: the targets
  set, then the default.
"""

from __future__ import annotations

import contextvars
import logging
import sys

__all__ = ["WORKLOAD", "LevelError", "LogLevels", "levels", "setup_logging"]

WORKLOAD: contextvars.ContextVar[str | None] = contextvars.ContextVar("workload", default=None)
"""``namespace/name`` of the waypoint whose work is being logged (None: the process's own)."""

FORMAT = "%(asctime)s %(levelname)-5s %(name)s%(workload)s  %(message)s"
_OFF = logging.CRITICAL + 10
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": _OFF,
}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}
_NAMES |= {logging.ERROR: "error", _OFF: "off"}


class LevelError(ValueError):
    """A level spec ztunnel would refuse (answered 400 with the usage)."""


class _WorkloadTag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        workload = WORKLOAD.get()
        record.workload = f" [{workload}]" if workload else ""
        return True


def setup_logging(level: str) -> None:
    """The process's log on stderr in ``FORMAT``, at ``level``.

    ``FORMAT`` names no process, thread or multiprocessing name, so records do not
    gather them (~0.5-1 µs per record; the node proxy logs an access line per
    connection at info).
    """
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    logging.basicConfig(
        level=_LEVELS.get(level.lower(), logging.INFO),
        format=FORMAT,
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _WorkloadTag) for f in handler.filters):
            handler.addFilter(_WorkloadTag())
    global _levels
    _levels = LogLevels()


def levels() -> LogLevels:
    """This process's live levels (one per process: in ``up --single-process`` every
    node's ztunnel shares them)."""
    global _levels
    if _levels is None:
        _levels = LogLevels()
    return _levels


def _logger_name(target: str) -> str:
    if target == "access":
        return "ambient.access"
    name = target.replace("::", ".")
    return name if name == "ambient" or name.startswith("ambient.") else f"ambient.{name}"


def _level_name(level: int) -> str:
    return _NAMES.get(level, logging.getLevelName(level).lower())


_levels: LogLevels | None = None


class LogLevels:
    """The live levels of this process's loggers (see the module docstring)."""

    def __init__(self) -> None:
        self.initial = logging.getLogger().level
        self.targets: dict[str, int] = {}

    def parse(self, spec: str) -> tuple[int | None, dict[str, int]]:
        """(default or None, {target: level}); ``LevelError`` naming a bad clause."""
        default: int | None = None
        targets: dict[str, int] = {}
        for clause in (c.strip() for c in spec.split(",")):
            if not clause:
                continue
            target, sep, word = clause.rpartition("=") if "=" in clause else clause.rpartition(":")
            if not sep:
                if clause not in _LEVELS:
                    raise LevelError(f"level {clause} is invalid")
                default = _LEVELS[clause]
            elif not target or word not in _LEVELS:
                raise LevelError(f"level {clause} is invalid")
            else:
                targets[target.rstrip(":")] = _LEVELS[word]
        return default, targets

    def apply(self, spec: str, *, reset: bool = False) -> None:
        """Change the levels as ``POST /logging?level=SPEC[&reset]`` (checked first: a bad
        spec changes nothing)."""
        default, targets = self.parse(spec)
        if reset:
            for target in self.targets:
                logging.getLogger(_logger_name(target)).setLevel(logging.NOTSET)
            self.targets.clear()
            logging.getLogger().setLevel(self.initial)
        if default is not None:
            logging.getLogger().setLevel(default)
        for target, level in targets.items():
            logging.getLogger(_logger_name(target)).setLevel(level)
            self.targets[target] = level

    def describe(self) -> str:
        """``access=debug,info``: the targets set, then the default."""
        parts = [f"{t}={_level_name(level)}" for t, level in sorted(self.targets.items())]
        return ",".join([*parts, _level_name(logging.getLogger().level)])
