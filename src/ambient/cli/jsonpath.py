"""kubectl's ``-o jsonpath=TEMPLATE`` output, for the subset operators use.

A template is text with ``{...}`` expressions. Supported inside braces:
``.field`` / ``['field']``, ``[N]`` (negative too), ``[*]`` and ``.*``,
``..field`` (recursive descent), filters ``[?(@.a.b=="x")]`` (``==``, ``!=``,
or a bare ``@.a`` for presence), ``"literal"`` strings with ``\\n``/``\\t``
escapes, and ``{range EXPR}...{end}`` loops. As kubectl does, several results
of one expression print separated by spaces, maps and lists print as JSON, and
a missing field prints nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["JsonPathError", "find", "render"]


class JsonPathError(ValueError):
    """A template kubectl would also refuse, with where in it the problem is."""


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Expr:
    source: str


@dataclass(frozen=True)
class _Range:
    source: str
    body: tuple[_Text | _Expr | _Range, ...]


_Part = _Text | _Expr | _Range
_NOTHING = object()


def _tokens(template: str) -> Iterator[tuple[str, str]]:
    index = 0
    while index < len(template):
        start = template.find("{", index)
        if start < 0:
            yield "text", template[index:]
            return
        if start > index:
            yield "text", template[index:start]
        depth, end, quote = 0, start, ""
        while end < len(template):
            char = template[end]
            if quote:
                if char == "\\":
                    end += 1
                elif char == quote:
                    quote = ""
            elif char in "\"'":
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    break
            end += 1
        if end >= len(template):
            raise JsonPathError(f"unclosed '{{' at offset {start} in {template!r}")
        yield "expr", template[start + 1 : end].strip()
        index = end + 1


def _parse(template: str) -> tuple[_Part, ...]:
    stack: list[tuple[str, list[_Part]]] = [("", [])]
    for kind, value in _tokens(template):
        if kind == "text":
            stack[-1][1].append(_Text(value))
        elif value.startswith("range "):
            stack.append((value[6:].strip(), []))
        elif value == "end":
            if len(stack) == 1:
                raise JsonPathError("{end} without {range ...}")
            source, body = stack.pop()
            stack[-1][1].append(_Range(source, tuple(body)))
        else:
            stack[-1][1].append(_Expr(value))
    if len(stack) != 1:
        raise JsonPathError(f"{{range {stack[-1][0]}}} without {{end}}")
    return tuple(stack[0][1])


_STEP = re.compile(
    r"""\.\.(?P<deep>[\w\-/]+)          # ..field
      | \.(?P<field>[\w\-/]+|\*)        # .field or .*
      | \[\s*(?P<index>-?\d+)\s*\]      # [N]
      | \[\s*\*\s*\]                    # [*]
      | \[\s*'(?P<key>[^']*)'\s*\]      # ['key.with.dots']
      | \[\s*\?\(\s*@(?P<filter>[^)]*)\)\s*\]   # [?(@.a=="b")]
    """,
    re.VERBOSE,
)
_FILTER = re.compile(
    r"""^(?P<path>(?:\.[\w\-/]+)+)\s*(?:(?P<op>==|!=)\s*(?P<value>"[^"]*"|'[^']*'|[\w.\-]+))?\s*$"""
)


def _children(value: object) -> list[object]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _descend(value: object, name: str) -> Iterator[object]:
    if isinstance(value, dict):
        if name in value:
            yield value[name]
        for child in value.values():
            yield from _descend(child, name)
    elif isinstance(value, list):
        for child in value:
            yield from _descend(child, name)


def _get_path(value: object, path: str) -> object:
    for name in path.strip(".").split("."):
        if not isinstance(value, dict) or name not in value:
            return _NOTHING
        value = value[name]
    return value


def _matches(item: object, condition: str, expr: str) -> bool:
    m = _FILTER.match(condition)
    if m is None:
        raise JsonPathError(f"unsupported filter [?(@{condition})] in {{{expr}}}")
    found = _get_path(item, m["path"])
    if m["op"] is None:
        return found is not _NOTHING
    raw = m["value"]
    wanted = raw[1:-1] if raw[0] in "\"'" else raw
    text = found if isinstance(found, str) else json.dumps(found)
    return (text == wanted) == (m["op"] == "==")


def _evaluate(expr: str, root: object, current: object) -> list[object]:
    if expr.startswith(("'", '"')) and expr.endswith(expr[0]) and len(expr) >= 2:
        return [_unescape(expr[1:-1])]
    values = [root if expr.startswith("$") or current is _NOTHING else current]
    rest = expr[1:] if expr.startswith(("$", "@")) else expr
    if rest and not rest.startswith((".", "[")):
        rest = "." + rest
    position = 0
    while position < len(rest):
        m = _STEP.match(rest, position)
        if m is None:
            raise JsonPathError(f"cannot parse {rest[position:]!r} in {{{expr}}}")
        position = m.end()
        out: list[object] = []
        for value in values:
            if m["deep"] is not None:
                out.extend(_descend(value, m["deep"]))
            elif m["field"] == "*" or m.group(0).replace(" ", "") == "[*]":
                out.extend(_children(value))
            elif m["field"] is not None or m["key"] is not None:
                name = m["field"] if m["field"] is not None else m["key"]
                if isinstance(value, dict) and name in value:
                    out.append(value[name])
            elif m["index"] is not None:
                if isinstance(value, list):
                    i = int(m["index"])
                    if -len(value) <= i < len(value):
                        out.append(value[i])
            elif m["filter"] is not None:
                out.extend(item for item in _children(value) if _matches(item, m["filter"], expr))
        values = out
    return values


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"')


def _show(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _render(parts: tuple[_Part, ...], root: object, current: object) -> str:
    out: list[str] = []
    for part in parts:
        if isinstance(part, _Text):
            out.append(part.text)
        elif isinstance(part, _Expr):
            out.append(" ".join(_show(v) for v in _evaluate(part.source, root, current)))
        else:
            for item in _evaluate(part.source, root, current):
                out.append(_render(part.body, root, item))
    return "".join(out)


def render(template: str, data: object) -> str:
    """``data`` rendered through a kubectl jsonpath ``template``."""
    return _render(_parse(template), data, _NOTHING)


def find(expr: str, data: object) -> list[object]:
    """Every value one expression (without braces, e.g. ``.spec.hosts``) finds in ``data``."""
    return _evaluate(expr, data, _NOTHING)
