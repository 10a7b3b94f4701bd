"""Kubernetes ``$(VAR)`` expansion, as kubelet applies it to env values, command and args.

A port of ``k8s.io/kubernetes/third_party/forked/golang/expansion``: ``$(NAME)``
is replaced by NAME's value when NAME is known and left as written otherwise;
``$$`` is an escaped ``$``; any other ``$`` (``$HOME``, an unclosed ``$(``) is
kept literally. There is no recursion: a substituted value is not expanded again.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["expand"]


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` references in ``text`` from ``variables``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable_name(text, cursor + 1)
            if is_var:
                out.append(variables.get(read, f"$({read})"))
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def _read_variable_name(text: str, start: int) -> tuple[str, bool, int]:
    """What follows a ``$`` at ``start - 1``: (text read, is a variable name, bytes consumed)."""
    first = text[start]
    if first == "$":
        return "$", False, 1
    if first == "(":
        close = text.find(")", start + 1)
        if close >= 0:
            return text[start + 1 : close], True, close - start + 1
        return "$(", False, 1
    return "$" + first, False, 1
