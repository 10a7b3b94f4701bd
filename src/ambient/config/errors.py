"""Problems found while loading configuration, and the one exception that carries them.

Every problem renders as a single line a user can act on::

    <file>:<document>: <Kind>/<name>: <field path>: <problem>

YAML syntax errors carry a line and column instead of a document index
(``<file>:<line>:<column>: <problem>``); segments that are unknown (no kind yet,
no field) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "Problem"]


def _one_line(text: str) -> str:
    """Return ``text`` with control characters escaped so it stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, located as precisely as known."""

    file: str
    document: int | None = None
    kind: str = ""
    name: str = ""
    path: str = ""
    message: str = ""
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        elif self.document is not None:
            where += f":{self.document}"
        parts = [where]
        if self.kind:
            parts.append(f"{self.kind}/{self.name}" if self.name else self.kind)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(_one_line(p) for p in parts)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error found in one load."""

    def __init__(self, problems: Iterable[Problem], warnings: Iterable[Problem] = ()) -> None:
        self.problems: list[Problem] = list(problems)
        self.warnings: list[Problem] = list(warnings)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
