"""A package's names imported on first use (PEP 562 module ``__getattr__``).

``ambient.config``, ``ambient.identity`` and ``ambient.controlplane`` re-export
names from their modules; importing every module for whoever imports one of them
cost the node proxy megabytes it never uses
(``tests/unit/local/test_nodeproxy_imports.py``). Each package keeps a table of
name -> module and sets ``__getattr__ = lazy_exports(__name__, table, globals())``:
a name's module is imported when the name is first read, and the value is then
kept in the package's namespace, so later reads are ordinary attribute reads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, table: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``table`` maps each name to its module."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
