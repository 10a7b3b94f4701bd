"""Tables as kubectl and istioctl print them: coloured on a terminal, plain columns when piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Aligned columns; with rich styling when stdout is a terminal."""
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, header_style="bold cyan", pad_edge=False)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        Console().print(table)
        return
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(value.ljust(widths[i]) for i, value in enumerate(row))
        sys.stdout.write(line.rstrip() + "\n")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "None"
    return str(value)


def print_kube_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """As kubectl's printers write tables (Go's tabwriter: minimal width 6, padding 3,
    the last column unpadded; no colours, empty cells left empty)."""
    cells = [list(headers)] + [list(row) for row in rows]
    widths = [max(6, max(len(r[i]) for r in cells) + 3) for i in range(len(headers) - 1)]
    for row in cells:
        line = "".join(value.ljust(widths[i]) for i, value in enumerate(row[:-1])) + row[-1]
        sys.stdout.write(line + "\n")
